"""Every layout of a model on a cluster, with its memory and speed, best first."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pretrain.config import ParallelConfig, Precision, TrainConfig
from pretrain.parallel.layout import ParallelLayout, validate_layout
from pretrain.planning.cluster import ClusterConfig
from pretrain.planning.memory import FP32, MemoryPlan, rank_memory
from pretrain.planning.shapes import StageParameters, stage_parameters
from pretrain.planning.speed import SpeedPlan, estimate_speed

MAX_MICRO_BATCH = 64
ZERO_STAGES = (0, 1, 2, 3)


@dataclass(frozen=True)
class LayoutPlan:
    config: TrainConfig
    layout: ParallelLayout
    precision: Precision
    memory: MemoryPlan
    speed: SpeedPlan

    def overrides(self) -> list[str]:
        """The settings that select this layout, for the training command line."""
        par, train = self.config.parallel, self.config.train
        return [
            f"parallel.tp={par.tp}",
            f"parallel.pp={par.pp}",
            f"parallel.cp={par.cp}",
            f"parallel.zero_stage={par.zero_stage}",
            f"train.micro_batch_size={train.micro_batch_size}",
            f"train.activation_checkpointing={str(train.activation_checkpointing).lower()}",
        ]


def resolve_precision(requested: Precision, cluster: ClusterConfig) -> Precision:
    """What train.precision=auto becomes on the cluster's devices (as deepspeed_config.py decides)."""
    if requested is not Precision.auto:
        return requested
    return Precision.bf16 if cluster.bf16 else Precision.fp32


class Planner:
    """Plans of one model and batch on one cluster; caches the per-stage parameter counts."""

    def __init__(self, cluster: ClusterConfig) -> None:
        self.cluster = cluster
        self._stages: dict[str, list[StageParameters]] = {}

    def _stage_parameters(self, cfg: TrainConfig) -> list[StageParameters]:
        par = cfg.parallel
        key = f"{cfg.model!r}|{cfg.optim!r}|{par.tp}|{par.pp}|{par.partition_method}"
        if key not in self._stages:
            self._stages[key] = stage_parameters(cfg.model, par.tp, par.pp, cfg.optim, par.partition_method)
        return self._stages[key]

    def plan(self, cfg: TrainConfig, world_size: int) -> LayoutPlan:
        """The plan of the layout ``cfg`` describes; a ValueError when the layout is invalid."""
        layout = validate_layout(cfg, world_size)
        precision = resolve_precision(cfg.train.precision, self.cluster)
        stages = self._stage_parameters(cfg)
        cpu = self.cluster.device_match is None
        ranks = tuple(rank_memory(cfg, layout, precision, stages, index, cpu) for index in range(layout.pp))
        if not self.cluster.untouched_memory_counts:  # DeepSpeed's buckets are allocated empty
            ranks = tuple(dataclasses.replace(rank, buffers=0) for rank in ranks)
        memory = MemoryPlan(
            ranks=ranks, device_bytes=self.cluster.device_memory_bytes(), margin=self.cluster.memory_margin
        )
        element = FP32 if precision is Precision.fp32 else 2
        speed = estimate_speed(cfg, layout, self.cluster, stages, list(ranks), element)
        return LayoutPlan(config=cfg, layout=layout, precision=precision, memory=memory, speed=speed)

    def candidates(self, base: TrainConfig) -> list[TrainConfig]:
        """Every combination of tp (within a node), pp, cp (the GPUs left: dp = world /
        (tp·pp·cp)), ZeRO stage, micro-batch and activation checkpointing; ``plan`` rejects
        those the trainer would refuse."""
        world = self.cluster.world_size
        configs = []
        for tp in _divisors(self.cluster.gpus_per_node):
            for pp in _divisors(world // tp):  # tp divides gpus_per_node, so the world
                for cp in _divisors(world // (tp * pp)):
                    dp = world // (tp * pp * cp)
                    per_rank = base.train.global_batch_size // dp if base.train.global_batch_size % dp == 0 else 0
                    for zero in ZERO_STAGES:
                        for micro in [m for m in _divisors(per_rank) if m <= MAX_MICRO_BATCH]:
                            for recompute in (False, True):
                                parallel = ParallelConfig(name="plan", tp=tp, pp=pp, cp=cp, zero_stage=zero)
                                train = dataclasses.replace(
                                    base.train, micro_batch_size=micro, activation_checkpointing=recompute
                                )
                                configs.append(dataclasses.replace(base, parallel=parallel, train=train))
        return configs

    def search(self, base: TrainConfig) -> list[LayoutPlan]:
        """The valid layouts, best first: those that fit by tokens/s, then the rest by memory."""
        plans = []
        for cfg in self.candidates(base):
            try:
                plans.append(self.plan(cfg, self.cluster.world_size))
            except ValueError:  # a layout the trainer refuses (divisibility, ZeRO with pipelines)
                continue
        return sorted(plans, key=_rank)


def _rank(plan: LayoutPlan) -> tuple:
    if plan.memory.fits:
        return (0, -plan.speed.tokens_per_s, plan.memory.fullest.total)
    return (1, plan.memory.fullest.total, -plan.speed.tokens_per_s)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
