"""What one rank holds of the model: its parameters, built from the model's own classes on
the meta device (no memory, no process group), so the planner counts exactly the shapes the
trainer builds.

Tensor parallelism splits the same layers the trainer's ``TensorParallelLayers`` splits
(column-parallel outputs, row-parallel inputs, the vocabulary); the pipeline cuts the same
list of layers ``build_pipeline`` hands to DeepSpeed, with DeepSpeed's own partitioning.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pretrain.config import OptimConfig, PartitionMethod
from pretrain.model.config import ModelConfig
from pretrain.model.gpt import GPT, Block, Embedding, LayerFactory, OutputHead, make_norm
from pretrain.training.optim import parameter_groups


class ShardShapes(LayerFactory):
    """The layers of one tensor-parallel rank, as plain modules of the shard's shape."""

    def __init__(self, tp: int) -> None:
        self.tp_size = tp

    def column(self, in_features: int, out_features: int, bias: bool) -> nn.Module:
        return nn.Linear(in_features, out_features // self.tp_size, bias=bias)

    def row(self, in_features: int, out_features: int, bias: bool) -> nn.Module:
        return nn.Linear(in_features // self.tp_size, out_features, bias=bias)  # bias whole, added after the sum

    def embedding(self, num_embeddings: int, dim: int) -> nn.Module:
        return nn.Embedding(num_embeddings // self.tp_size, dim)


@dataclass(frozen=True)
class StageParameters:
    """The parameters one rank of a pipeline stage holds (before ZeRO partitioning)."""

    sizes: tuple[int, ...]  # elements of each parameter tensor
    group_sizes: tuple[int, ...]  # elements of each optimizer parameter group (decay, no decay)
    layers: int  # transformer blocks in the stage
    largest_block: int  # elements of one block (what ZeRO-3 gathers at a time)
    first: bool  # holds the embedding
    last: bool  # holds the output head

    @property
    def count(self) -> int:
        return sum(self.sizes)


def _pipeline_layers(cfg: ModelConfig, layers: LayerFactory) -> list[nn.Module]:
    """The layer list of ``pretrain.parallel.pipeline.build_pipeline``: embedding, blocks,
    then the head (a final norm and the tied embedding again when embeddings are tied)."""
    modules: list[nn.Module] = [Embedding(cfg, layers)]
    modules += [Block(cfg, layers) for _ in range(cfg.n_layers)]
    if cfg.tie_embeddings:
        modules += [make_norm(cfg), Embedding(cfg, layers)]
    else:
        modules.append(OutputHead(cfg, layers))
    return modules


def _stage_bounds(modules: list[nn.Module], pp: int, method: PartitionMethod) -> list[int]:
    """DeepSpeed's cut of the layer list into ``pp`` stages (PipelineModule._partition_layers)."""
    from deepspeed.runtime import utils as ds_utils

    if method is PartitionMethod.uniform:
        return list(ds_utils.partition_uniform(num_items=len(modules), num_parts=pp))
    if method is PartitionMethod.blocks:
        weights = [int(isinstance(m, Block)) for m in modules]
    else:
        weights = [sum(p.numel() for p in m.parameters()) for m in modules]
    return [int(b) for b in ds_utils.partition_balanced(weights=weights, num_parts=pp)]


def _describe(modules: list[nn.Module], optim: OptimConfig, first: bool, last: bool) -> StageParameters:
    holder = nn.ModuleList(modules)
    groups = parameter_groups(holder, optim)
    blocks = [b for m in modules for b in m.modules() if isinstance(b, Block)]
    return StageParameters(
        sizes=tuple(p.numel() for p in holder.parameters()),
        group_sizes=tuple(sum(p.numel() for p in g["params"]) for g in groups),
        layers=len(blocks),
        largest_block=max((sum(p.numel() for p in b.parameters()) for b in blocks), default=0),
        first=first,
        last=last,
    )


def stage_parameters(
    cfg: ModelConfig, tp: int, pp: int, optim: OptimConfig, partition_method: PartitionMethod
) -> list[StageParameters]:
    """The parameters of a rank of each pipeline stage, first stage first."""
    layers = ShardShapes(tp)
    with torch.device("meta"):
        if pp == 1:
            return [_describe([GPT(cfg, layers)], optim, first=True, last=True)]
        modules = _pipeline_layers(cfg, layers)
    bounds = _stage_bounds(modules, pp, partition_method)
    return [_describe(modules[bounds[s] : bounds[s + 1]], optim, first=s == 0, last=s == pp - 1) for s in range(pp)]
