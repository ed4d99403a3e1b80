"""Weight initialization that does not depend on the parallel layout.

Each parameter's full tensor is drawn from its own generator, seeded by the run's seed and
the parameter's name in the whole model (``blocks.3.attn.wq.weight``); a tensor-parallel
shard keeps its slice of it, a ZeRO-3 partition its part of that slice. So a pipeline stage,
a tensor-parallel rank, a ZeRO-3 partition and a single process all start from exactly the
same weights.

Modules are built on the meta device and then materialized (``materialize``): a rank
allocates only the parameters it holds, and beyond them, while drawing a tensor-parallel
slice on the CPU, a bounded piece of the full tensor at a time (``draw_slice``: torch's CPU
generator cannot skip ahead, but the stream can be drawn in pieces that continue it exactly,
keeping only the slice's values). Under
``deepspeed.zero.Init`` each module's parameters are partitioned as soon as it is built, and
only the partitions are filled. Values are always drawn on the CPU, also for parameters that
live on a GPU, since a CUDA generator's stream differs from the CPU's.
"""

from __future__ import annotations

import math
import zlib

import torch
import torch.distributed as dist
from torch import nn

from pretrain.model.config import ModelConfig

RESIDUAL_PROJECTIONS = ("attn.wo.weight", "mlp.down.weight")


def local_shape(param: torch.Tensor) -> torch.Size:
    """The shape this rank's module gives the parameter (its tensor-parallel slice), also
    when ZeRO-3 has partitioned it away (and keeps the shape aside)."""
    return getattr(param, "ds_shape", param.shape)


def full_shape(param: torch.Tensor) -> torch.Size:
    """The shape of the whole parameter that a tensor-parallel shard is a slice of."""
    local = local_shape(param)
    dim = getattr(param, "tp_split_dim", None)
    if dim is None:
        return local
    shape = list(local)
    shape[dim] *= param.tp_size  # type: ignore[attr-defined]
    return torch.Size(shape)


def shard_of(full: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """This rank's slice of a full parameter value."""
    dim = getattr(param, "tp_split_dim", None)
    if dim is None:
        return full
    return full.chunk(param.tp_size, dim=dim)[param.tp_rank]  # type: ignore[attr-defined]


# Values drawn per piece when a rank keeps only a slice (a multiple of 16, see draw_slice).
DRAW_PIECE = 2**20


CPU = torch.device("cpu")


def initial_value(
    name: str, shape: torch.Size, cfg: ModelConfig, seed: int, device: torch.device = CPU
) -> torch.Tensor:
    """GPT-2 style: unit norm weights, zero biases, N(0, init_std) elsewhere, with residual
    output projections scaled by 1/sqrt(2 · n_layers) so depth does not grow the residual
    stream's variance."""
    return initial_slice(name, shape, None, cfg, seed, device)


def initial_slice(
    name: str,
    shape: torch.Size,
    split: tuple[int, int, int] | None,
    cfg: ModelConfig,
    seed: int,
    device: torch.device = CPU,
) -> torch.Tensor:
    """The tensor-parallel slice ``split`` = (dim, rank, size) of the initial value of the
    whole tensor of ``shape`` (the whole tensor for None), exactly as cut from it. Drawn
    from a CPU generator whatever ``device`` it is returned on: a CUDA generator gives
    other values, so a layout whose parameters live on the GPU (ZeRO-3's partitions) would
    start elsewhere than the others."""
    local = list(shape)
    if split is not None:
        local[split[0]] //= split[2]
    if name.endswith("norm.weight"):
        return torch.ones(local, device=device)
    if name.endswith(".bias"):
        return torch.zeros(local, device=device)
    std = cfg.init_std
    if cfg.scaled_init and name.endswith(RESIDUAL_PROJECTIONS):
        std /= (2 * cfg.n_layers) ** 0.5
    generator = torch.Generator().manual_seed((seed << 32) ^ zlib.crc32(name.encode()))
    drawn = torch.randn(shape, generator=generator) if split is None else draw_slice(shape, split, generator)
    return drawn.mul_(std).to(device)


def draw_slice(shape: torch.Size, split: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
    """The slice ``split`` = (dim, rank, size) of ``torch.randn(shape, generator=generator)``
    on the CPU, drawing whole rows of the tensor flattened after ``dim`` (about DRAW_PIECE
    values at a time) up to the slice's last row and keeping the slice's part of each.

    torch's CPU sampler turns consecutive uniforms into normals 16 at a time and, when the
    count is not a multiple of 16, redraws the last 16; so pieces whose sizes are multiples
    of 16, and a last piece that takes the rest of the tensor (at least 16 values), continue
    the one stream exactly (a test checks this against the whole draw)."""
    dim, rank, size = split
    rows, inner = math.prod(shape[: max(dim, 1)]), math.prod(shape[max(dim, 1) :])
    if dim == 0:  # a block of whole rows
        (first_row, last_row), (first_col, last_col) = (rank * rows // size, (rank + 1) * rows // size), (0, inner)
    else:  # a block of columns of every row
        (first_row, last_row), (first_col, last_col) = (0, rows), (rank * inner // size, (rank + 1) * inner // size)
    rows_per_piece = max(1, DRAW_PIECE // inner)
    rows_per_piece += -rows_per_piece % (16 // math.gcd(inner, 16))  # a multiple of 16 values
    out = torch.empty(last_row - first_row, last_col - first_col)
    row = 0
    while row < last_row:  # rows past the slice are never drawn
        rest = rows - row
        count = rest if (rest - rows_per_piece) * inner < 16 else rows_per_piece
        piece = torch.randn(count * inner, generator=generator).view(count, inner)
        lo, hi = max(row, first_row), min(row + count, last_row)
        if lo < hi:
            out[lo - first_row : hi - first_row] = piece[lo - row : hi - row, first_col:last_col]
        row += count
    local = list(shape)
    local[dim] //= size
    return out.view(local)


def tp_split(param: torch.Tensor) -> tuple[int, int, int] | None:
    """(dim, rank, size) of a tensor-parallel shard; None for a parameter held whole."""
    dim = getattr(param, "tp_split_dim", None)
    return None if dim is None else (dim, param.tp_rank, param.tp_size)  # type: ignore[attr-defined]


@torch.no_grad()
def init_parameters(module: nn.Module, prefix: str, cfg: ModelConfig, seed: int) -> None:
    """Initialize ``module``'s parameters, ``prefix`` being its name in the whole model."""
    for name, param in module.named_parameters():
        if param.is_meta:
            continue
        # Drawn on the CPU; set_local copies only this rank's part (a ZeRO-3 partition) to
        # the parameter's device.
        set_local(param, initial_slice(prefix + name, full_shape(param), tp_split(param), cfg, seed))


@torch.no_grad()
def partition_range(param: nn.Parameter) -> tuple[int, int]:
    """[start, stop) of this rank's ZeRO-3 partition in the flattened tensor-parallel slice
    (the last rank's partition is padded past the end)."""
    size = param.ds_tensor.numel()  # type: ignore[attr-defined]
    start = dist.get_rank(param.ds_process_group) * size  # type: ignore[attr-defined]
    return start, min(start + size, local_shape(param).numel())


def fill_partition(param: nn.Parameter, values: torch.Tensor) -> None:
    """Write this rank's ZeRO-3 partition (``values``: its part of the flat slice)."""
    partition = param.ds_tensor  # type: ignore[attr-defined]
    partition.zero_()  # the last rank's padding
    partition[: values.numel()].copy_(values)


def set_local(param: nn.Parameter, local: torch.Tensor) -> None:
    """Give ``param`` its tensor-parallel slice ``local`` (under ZeRO-3, only its partition
    of that slice)."""
    if not hasattr(param, "ds_tensor"):
        param.copy_(local)
        return
    start, stop = partition_range(param)
    fill_partition(param, local.reshape(-1)[start:stop])


def materialize(module: nn.Module, prefix: str, cfg: ModelConfig, seed: int) -> None:
    """Allocate ``module``'s meta parameters on the default device and initialize them
    (and parameters ZeRO-3 already partitioned); left on meta when the default device is
    meta (a model only counted, or loaded with ``assign=True``)."""
    device = torch.get_default_device()
    if device.type == "meta":
        return
    allocated: dict[int, nn.Parameter] = {}
    for owner in module.modules():
        for key, param in owner.named_parameters(recurse=False):
            if param.is_meta:
                if id(param) not in allocated:
                    real = nn.Parameter(torch.empty_like(param, device=device), requires_grad=param.requires_grad)
                    real.__dict__.update(param.__dict__)  # tensor-parallel attributes (module.to_empty drops them)
                    allocated[id(param)] = real
                owner._parameters[key] = allocated[id(param)]
    init_parameters(module, prefix, cfg, seed)
