"""Weight initialization that does not depend on the parallel layout.

Each parameter's full tensor is drawn from its own generator, seeded by the run's seed and
the parameter's name in the whole model (``blocks.3.attn.wq.weight``); a tensor-parallel
shard keeps its slice of it. So a pipeline stage, a tensor-parallel rank and a single
process all start from exactly the same weights, and no rank ever holds more than one full
parameter at a time.
"""
from __future__ import annotations

import zlib

import torch
from torch import nn

from pretrain.model_config import ModelConfig

RESIDUAL_PROJECTIONS = ("attn.wo.weight", "mlp.down.weight")


def full_shape(param: torch.Tensor) -> torch.Size:
    """The shape of the whole parameter that a tensor-parallel shard is a slice of."""
    dim = getattr(param, "tp_split_dim", None)
    if dim is None:
        return param.shape
    shape = list(param.shape)
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
    return torch.randn(shape, generator=generator, device=device) * std


@torch.no_grad()
def init_parameters(module: nn.Module, prefix: str, cfg: ModelConfig, seed: int) -> None:
    """Initialize ``module``'s parameters, ``prefix`` being its name in the whole model."""
    for name, param in module.named_parameters():
        if param.is_meta:
            continue
        full = initial_value(prefix + name, full_shape(param), cfg, seed, param.device)
        param.copy_(shard_of(full, param))
