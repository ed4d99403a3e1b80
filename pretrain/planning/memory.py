"""Memory per rank: model states (weights, gradients, optimizer state) counted exactly as
DeepSpeed holds them, activations from :mod:`pretrain.planning.activations`, and DeepSpeed's
communication buffers.

Model states follow Rajbhandari et al. 2020 (ZeRO, section 3): with Ψ parameters on a rank,
N data-parallel ranks (dp × cp: context-parallel ranks hold the same weights) and K bytes of
optimizer state per parameter, stage 1 divides the optimizer state by N, stage 2 the
gradients too, stage 3 the weights too. DeepSpeed 0.19 reduces the gradients of stage 1 into
partitions as well (measured: tests/pretrain/planning/test_plan.py), which ``GRADIENTS_SHARDED_FROM``
records; the paper's stage 1 keeps them whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, cached_property

from pretrain.config import OptimizerName, Precision, TrainConfig
from pretrain.objectives import ObjectiveName
from pretrain.parallel.layout import ParallelLayout
from pretrain.planning.activations import ActivationSetting, StageActivations, stage_activations
from pretrain.planning.shapes import StageParameters

FP32 = 4
ADAM_STEP_COUNTER = 4  # torch's Adam keeps its step count in a float32 tensor per parameter tensor
# ZeRO stage from which DeepSpeed keeps only a partition of the gradients (the paper: 2).
GRADIENTS_SHARDED_FROM = 1
# DeepSpeed aligns each flat ZeRO-1/2 group to 2 elements per data-parallel rank
# (stage_1_and_2.py: nccl_start_alignment_factor).
ZERO_ALIGNMENT = 2


@dataclass(frozen=True)
class StateBytes:
    """Bytes per element of each model state."""

    weight: int
    gradient: int
    optimizer: int  # fp32 master copy (when there is one) plus the optimizer's own state


def state_bytes(cfg: TrainConfig, precision: Precision) -> StateBytes:
    mixed = precision is not Precision.fp32
    zero = cfg.parallel.zero_stage
    weight = 2 if mixed else FP32
    # deepspeed_config.py accumulates bf16 gradients in fp32 from ZeRO 1 on.
    gradient = FP32 if not mixed or (precision is Precision.bf16 and zero >= 1) else 2
    master = FP32 if mixed or zero >= 1 else 0  # ZeRO keeps an fp32 copy of its partition even in fp32
    if cfg.optim.name is OptimizerName.adamw:
        moments = 2 * FP32
    else:
        moments = FP32 if cfg.optim.momentum else 0
    return StateBytes(weight=weight, gradient=gradient, optimizer=master + moments)


def model_state_bytes(
    params: int,
    partition: int,
    zero_stage: int,
    sizes: StateBytes,
    gradients_sharded_from: int = GRADIENTS_SHARDED_FROM,
) -> tuple[int, int, int]:
    """(weights, gradients, optimizer) bytes of a rank that holds ``params`` elements of the
    model and owns a ZeRO partition of ``partition`` elements of them."""
    weights = sizes.weight * (partition if zero_stage >= 3 else params)
    gradients = sizes.gradient * (partition if zero_stage >= gradients_sharded_from else params)
    optimizer = sizes.optimizer * (partition if zero_stage >= 1 else params)
    return weights, gradients, optimizer


def lora_elements_per_layer(cfg: TrainConfig, tp: int) -> int:
    """Adapter values one tensor-parallel rank holds per block (``pretrain.model.lora``): the
    split factor of each adapter is 1/tp, the other whole."""
    model, rank = cfg.model, cfg.lora.rank
    attention = model.n_heads * model.head_dim
    kv = model.kv_heads * model.head_dim
    column = {"q": attention, "k": kv, "v": kv, "gate": model.ffn_dim, "up": model.ffn_dim}  # out features, d_model in
    row = {"o": attention, "down": model.ffn_dim}  # in features, d_model out
    total = 0
    for target in map(str, cfg.lora.targets):
        if target in column:
            total += rank * (model.d_model + column[target] // tp)
        else:
            total += rank * (row[target] // tp + model.d_model)
    return total


def zero_partition(stage: StageParameters, zero_stage: int, dp: int) -> int:
    """Elements of this rank's ZeRO partition: each flat group padded to a multiple of
    2·dp (stages 1-2), or each parameter cut into dp slices (stage 3)."""
    if zero_stage == 0:
        return stage.count
    if zero_stage == 3:
        return sum(math.ceil(size / dp) for size in stage.sizes)
    alignment = ZERO_ALIGNMENT * dp
    return sum(math.ceil(size / alignment) * alignment // dp for size in stage.group_sizes)


@dataclass(frozen=True)
class ZeroBuffers:
    """DeepSpeed's ZeRO settings that size its buffers (its defaults; we set none)."""

    reduce_bucket_size: int
    overlap_comm: bool
    contiguous_gradients: bool
    prefetch_bucket_size: int
    param_persistence_threshold: int
    sub_group_size: int


@cache
def zero_buffers(zero_stage: int) -> ZeroBuffers:
    """DeepSpeed's defaults for the stage, read from DeepSpeed's own config class."""
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    ds = DeepSpeedZeroConfig(stage=zero_stage)
    return ZeroBuffers(
        ds.reduce_bucket_size,
        bool(ds.overlap_comm),
        ds.contiguous_gradients,
        ds.prefetch_bucket_size,
        ds.param_persistence_threshold,
        ds.sub_group_size,
    )


@dataclass(frozen=True)
class RankMemory:
    """Bytes one rank holds."""

    weights: int
    gradients: int
    optimizer: int
    activations_stored: float  # without activation checkpointing
    activations_recomputed: float  # with it
    buffers: int  # communication buckets
    recompute: bool

    @property
    def activations(self) -> float:
        return self.activations_recomputed if self.recompute else self.activations_stored

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.buffers


def _persistent_elements(stage: StageParameters, buffers: ZeroBuffers) -> int:
    """ZeRO-3 keeps parameters at or below the persistence threshold gathered all the time."""
    return sum(size for size in stage.sizes if size <= buffers.param_persistence_threshold)


def _step_counters(cfg: TrainConfig, stage: StageParameters, buffers: ZeroBuffers) -> int:
    if cfg.optim.name is not OptimizerName.adamw:
        return 0
    if cfg.parallel.zero_stage == 0:
        return ADAM_STEP_COUNTER * len(stage.sizes)
    if cfg.parallel.zero_stage == 3:  # one flat tensor per sub-group of each group
        return ADAM_STEP_COUNTER * sum(math.ceil(size / buffers.sub_group_size) for size in stage.group_sizes if size)
    return ADAM_STEP_COUNTER * sum(1 for size in stage.group_sizes if size)


def bf16_optimizer(zero_stage: int, precision: Precision) -> bool:
    """bf16 under ZeRO-1 runs in DeepSpeed's BF16_Optimizer (engine.py: _do_optimizer_sanity_check)."""
    return precision is Precision.bf16 and zero_stage == 1


def _buffer_bytes(
    cfg: TrainConfig,
    layout: ParallelLayout,
    stage: StageParameters,
    sizes: StateBytes,
    buffers: ZeroBuffers,
    precision: Precision,
) -> int:
    """Gradient buckets for the data-parallel reduction, and ZeRO-3's gathered parameters."""
    zero = cfg.parallel.zero_stage
    if zero == 0 or bf16_optimizer(zero, precision):  # the engine flattens gradients into buckets to all-reduce them
        return min(buffers.reduce_bucket_size, stage.count) * sizes.gradient if layout.gradient_peers > 1 else 0
    if zero == 3:
        gathered = min(stage.count, stage.largest_block + buffers.prefetch_bucket_size)
        return buffers.reduce_bucket_size * sizes.gradient + gathered * sizes.weight
    if not buffers.contiguous_gradients:
        return 0
    count = (2 if buffers.overlap_comm else 1) + (1 if layout.pp > 1 else 0)  # + the pipeline's own bucket
    reduction = FP32 if zero == 1 else sizes.gradient  # ZeRO-1 reduces into an fp32 accumulator
    return count * buffers.reduce_bucket_size * reduction


def rank_memory(
    cfg: TrainConfig,
    layout: ParallelLayout,
    precision: Precision,
    stages: list[StageParameters],
    stage_index: int,
    cpu: bool = False,
) -> RankMemory:
    """Memory of a rank of pipeline stage ``stage_index``; ``cpu``: on a CPU, whose attention
    keeps dense masks (``ActivationSetting.dense_masks``)."""
    stage = stages[stage_index]
    zero = cfg.parallel.zero_stage
    sizes = state_bytes(cfg, precision)
    buffers = zero_buffers(zero)
    # bf16 ZeRO-1 with fp32 accumulation runs in DeepSpeed's BF16_Optimizer, which keeps the
    # whole fp32 gradient (engine.py: _do_optimizer_sanity_check).
    sharded_from = 2 if bf16_optimizer(zero, precision) else GRADIENTS_SHARDED_FROM
    partition = zero_partition(stage, zero, layout.gradient_peers)  # ZeRO partitions over dp × cp
    weights, gradients, optimizer = model_state_bytes(stage.count, partition, zero, sizes, sharded_from)
    if cfg.lora.enabled:  # the base is frozen: gradients and optimizer state for the adapters alone
        trained = stage.layers * lora_elements_per_layer(cfg, layout.tp)
        trained_partition = math.ceil(trained / layout.gradient_peers) if zero else trained
        adapters, gradients, optimizer = model_state_bytes(trained, trained_partition, zero, sizes, sharded_from)
        weights += adapters
    if zero == 3:
        weights += _persistent_elements(stage, buffers) * sizes.weight
    activations = _activations(cfg, layout, precision, stage, stage_index, cpu)
    return RankMemory(
        weights=weights,
        gradients=gradients,
        optimizer=optimizer + _step_counters(cfg, stage, buffers),
        activations_stored=activations.stored,
        activations_recomputed=activations.recomputed,
        buffers=_buffer_bytes(cfg, layout, stage, sizes, buffers, precision),
        recompute=cfg.train.activation_checkpointing,
    )


def dense_masks(cfg: TrainConfig, cp: int) -> int:
    """Dense masks per layer of a micro-batch on a CPU (``ActivationSetting.dense_masks``):
    one per sample for document masking and prefix-LM, one shared under cp otherwise."""
    objective = cfg.objective.name
    if cfg.objective.document_masking or objective in (ObjectiveName.span, ObjectiveName.sft):
        return cfg.train.micro_batch_size
    return 1 if cp > 1 and objective is not ObjectiveName.mlm else 0


def _activations(
    cfg: TrainConfig, layout: ParallelLayout, precision: Precision, stage: StageParameters, stage_index: int, cpu: bool
) -> StageActivations:
    setting = ActivationSetting(
        seq_len=cfg.train.seq_len,
        micro_batch=cfg.train.micro_batch_size,
        element_bytes=FP32 if precision is Precision.fp32 else 2,
        tp=layout.tp,
        sequence_parallel=cfg.parallel.sequence_parallel,
        sharded_linear_inputs=False,
        cp=layout.cp,
        dense_masks=dense_masks(cfg, layout.cp) if cpu else 0,
    )
    micro_batches = cfg.train.global_batch_size // (cfg.train.micro_batch_size * layout.dp)  # cp ranks share samples
    in_flight = min(layout.pp - stage_index, micro_batches)  # 1F1B: stage k holds pp − k micro-batches
    interval = cfg.parallel.checkpoint_interval if layout.pp > 1 else 1
    return stage_activations(cfg.model, setting, stage.layers, in_flight, stage.last, interval)


@dataclass(frozen=True)
class MemoryPlan:
    """The fullest rank of a layout, against what a device offers."""

    ranks: tuple[RankMemory, ...]  # one per pipeline stage
    device_bytes: int
    margin: float

    @cached_property
    def fullest(self) -> RankMemory:
        return max(self.ranks, key=lambda rank: rank.total)

    @property
    def usable_bytes(self) -> float:
        return self.device_bytes * (1 - self.margin)

    @property
    def fits(self) -> bool:
        return self.fullest.total <= self.usable_bytes
