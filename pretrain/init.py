"""Weight initialization that does not depend on the parallel layout.

Each parameter's full tensor is drawn from its own generator, seeded by the run's seed and
the parameter's name in the whole model (``blocks.3.attn.wq.weight``); a tensor-parallel
shard keeps its slice of it, a ZeRO-3 partition its part of that slice. So a pipeline stage,
a tensor-parallel rank, a ZeRO-3 partition and a single process all start from exactly the
same weights.

Modules are built on the meta device and then materialized (``materialize``): a rank
allocates only the parameters it holds, and beyond them at most one full parameter at a time
while drawing it (torch's CPU generator cannot skip ahead to a slice). Under
``deepspeed.zero.Init`` each module's parameters are partitioned as soon as it is built, and
only the partitions are filled.
"""
from __future__ import annotations

import zlib

import torch
import torch.distributed as dist
from torch import nn

from pretrain.model_config import ModelConfig

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


def initial_value(name: str, shape: torch.Size, cfg: ModelConfig, seed: int, device: torch.device) -> torch.Tensor:
    """GPT-2 style: unit norm weights, zero biases, N(0, init_std) elsewhere, with residual
    output projections scaled by 1/sqrt(2 · n_layers) so depth does not grow the residual
    stream's variance."""
    if name.endswith("norm.weight"):
        return torch.ones(shape, device=device)
    if name.endswith(".bias"):
        return torch.zeros(shape, device=device)
    std = cfg.init_std
    if cfg.scaled_init and name.endswith(RESIDUAL_PROJECTIONS):
        std /= (2 * cfg.n_layers) ** 0.5
    generator = torch.Generator(device=device).manual_seed((seed << 32) ^ zlib.crc32(name.encode()))
    return torch.randn(shape, generator=generator, device=device).mul_(std)


@torch.no_grad()
def init_parameters(module: nn.Module, prefix: str, cfg: ModelConfig, seed: int) -> None:
    """Initialize ``module``'s parameters, ``prefix`` being its name in the whole model."""
    for name, param in module.named_parameters():
        if param.is_meta:
            continue
        storage = param.ds_tensor if hasattr(param, "ds_tensor") else param
        set_from_full(param, initial_value(prefix + name, full_shape(param), cfg, seed, storage.device))


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


def set_from_full(param: nn.Parameter, full: torch.Tensor) -> None:
    """Give ``param`` this rank's part of the whole-model tensor ``full``: its
    tensor-parallel slice and, under ZeRO-3, its partition of that slice. With
    ``pipeline.canonical_parameters`` (whole-model name -> local parameter) this is the one
    mapping from whole-model tensors to what a rank holds."""
    local = shard_of(full, param)
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
