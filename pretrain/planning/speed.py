"""Step time from a roofline model: matmul FLOPs at a calibrated fraction of the peak, the
tensor-parallel all-reduces over the node's link, the context-parallel key/value exchange over
the link its group spans, the pipeline bubble, the data-parallel (× context-parallel)
reduction over the link its group spans, and the optimizer update at memory bandwidth.
Communication is not overlapped with compute (an upper bound on the step). docs/plan.md
states each formula.
"""

from __future__ import annotations

from dataclasses import dataclass

from pretrain.config import TrainConfig
from pretrain.model.stats import training_flops_per_token
from pretrain.parallel.layout import ParallelLayout
from pretrain.planning.activations import ActivationSetting, gathered_kv_bytes
from pretrain.planning.cluster import ClusterConfig
from pretrain.planning.memory import RankMemory
from pretrain.planning.shapes import StageParameters

GB = 1e9
# All-reduces per transformer layer per micro-batch under tensor parallelism: after the
# attention and after the MLP in the forward, and their mirrors in the backward.
TP_ALL_REDUCES_PER_LAYER = 4
# Key/value collectives per transformer layer per micro-batch under context parallelism
# (pretrain/parallel/context.py): the forward's all-gather and the backward's reduce-scatter
# of their gradients; recomputation gathers once more.
CP_EXCHANGES_PER_LAYER = 2


@dataclass(frozen=True)
class SpeedPlan:
    step_s: float
    tokens_per_s: float
    mfu: float
    compute_s: float  # matmuls of the slowest stage, all micro-batches, bubble included
    bubble_fraction: float
    tensor_parallel_s: float
    context_parallel_s: float
    data_parallel_s: float
    optimizer_s: float


def ring_seconds(bytes_: float, ranks: int, gb_per_s: float, all_reduce: bool) -> float:
    """A ring all-reduce moves 2(n−1)/n of the buffer per rank; a reduce-scatter or an
    all-gather half of that."""
    if ranks <= 1:
        return 0.0
    return (2.0 if all_reduce else 1.0) * (ranks - 1) / ranks * bytes_ / (gb_per_s * GB)


def _link(ranks_spanned: int, cluster: ClusterConfig) -> float:
    """A group whose ranks lie within one node talks over NVLink, else over the network."""
    return cluster.intra_node_gb_per_s if ranks_spanned <= cluster.gpus_per_node else cluster.inter_node_gb_per_s


def _flops_per_token(cfg: TrainConfig, stage: StageParameters) -> float:
    """Training FLOPs per token of one stage (before tensor parallelism), from model_stats:
    the output projection's share, and the rest spread evenly over the layers."""
    model = cfg.model
    head = 6.0 * model.d_model * model.padded_vocab_size
    per_layer = (training_flops_per_token(model, cfg.train.seq_len) - head) / model.n_layers
    recompute = 4 / 3 if cfg.train.activation_checkpointing else 1.0  # one more forward of the layers
    return stage.layers * per_layer * recompute + (head if stage.last else 0.0)


def estimate_speed(
    cfg: TrainConfig,
    layout: ParallelLayout,
    cluster: ClusterConfig,
    stages: list[StageParameters],
    ranks: list[RankMemory],
    activation_bytes: int,
) -> SpeedPlan:
    train = cfg.train
    micro_batches = train.global_batch_size // (train.micro_batch_size * layout.dp)
    micro_tokens = train.micro_batch_size * train.seq_len / layout.cp  # on one rank of the cp group
    latency = cluster.collective_latency_us * 1e-6
    rate = cluster.peak_tflops * 1e12 * cluster.matmul_efficiency

    # Per micro-batch, per stage: matmuls, tensor-parallel all-reduces, pipeline hand-over.
    hidden = micro_tokens * cfg.model.d_model * activation_bytes
    tp_link = _link(layout.tp, cluster)
    pp_link = _link(layout.tp * layout.cp * layout.dp * 2, cluster) if layout.pp > 1 else cluster.intra_node_gb_per_s
    recompute = 1.5 if train.activation_checkpointing else 1.0  # the rebuilt forward all-reduces again
    exchange_s = _kv_exchange_seconds(cfg, layout, cluster, activation_bytes)
    slowest_compute, slowest_micro_s, tensor_parallel, context_parallel = 0.0, 0.0, 0.0, 0.0
    for stage in stages:
        compute = micro_tokens * _flops_per_token(cfg, stage) / layout.tp / rate
        all_reduces = (
            stage.layers * TP_ALL_REDUCES_PER_LAYER * recompute + stage.first + 4 * stage.last if layout.tp > 1 else 0
        )
        tp_s = all_reduces * (ring_seconds(hidden, layout.tp, tp_link, all_reduce=True) + latency)
        exchanges = CP_EXCHANGES_PER_LAYER + (1 if train.activation_checkpointing else 0)
        cp_s = stage.layers * exchanges * exchange_s
        p2p = 2 * hidden / (pp_link * GB) if layout.pp > 1 else 0.0
        if compute + tp_s + cp_s + p2p > slowest_micro_s:
            slowest_micro_s, slowest_compute = compute + tp_s + cp_s + p2p, compute
            tensor_parallel, context_parallel = tp_s, cp_s
    slots = micro_batches + layout.pp - 1  # 1F1B: the bubble is (pp − 1) micro-batch slots
    pipeline_s = slots * slowest_micro_s

    # Data parallel: per step (ZeRO-0), or per micro-batch (ZeRO 1-2 reduce every backward
    # into partitions; ZeRO-3 also gathers the weights for every forward and backward). The
    # group is dp × cp: the cp ranks hold the same weights, with gradients of different tokens.
    fullest = max(ranks, key=lambda rank: rank.total)
    largest = max(stages, key=lambda stage: stage.count).count
    grads = largest * activation_bytes
    group = layout.gradient_peers
    dp_link = _link(layout.tp * group, cluster)
    zero = cfg.parallel.zero_stage
    if zero == 0:
        data_parallel = ring_seconds(grads, group, dp_link, all_reduce=True)
    else:
        reductions = micro_batches * ring_seconds(grads, group, dp_link, all_reduce=False)
        gathers = (micro_batches * (3 if train.activation_checkpointing else 2)) if zero == 3 else 1
        data_parallel = reductions + gathers * ring_seconds(grads, group, dp_link, all_reduce=False)
    data_parallel += (micro_batches * latency) if group > 1 else 0.0

    states = fullest.weights + fullest.gradients + fullest.optimizer
    optimizer = 2 * states / (cluster.memory_bandwidth_gb_per_s * GB)  # read and write every state once
    step = pipeline_s + data_parallel + optimizer + cluster.step_overhead_ms * 1e-3
    tokens_per_s = train.global_batch_size * train.seq_len / step
    model_flops = training_flops_per_token(cfg.model, train.seq_len) * tokens_per_s
    return SpeedPlan(
        step_s=step,
        tokens_per_s=tokens_per_s,
        mfu=model_flops / (layout.world_size * cluster.peak_tflops * 1e12),
        compute_s=slots * slowest_compute,
        bubble_fraction=(layout.pp - 1) / slots,
        tensor_parallel_s=micro_batches * tensor_parallel,
        context_parallel_s=micro_batches * context_parallel,
        data_parallel_s=data_parallel,
        optimizer_s=optimizer,
    )


def _kv_exchange_seconds(cfg: TrainConfig, layout: ParallelLayout, cluster: ClusterConfig, element_bytes: int) -> float:
    """One all-gather (or reduce-scatter) of a layer's keys and values over the cp group, for
    one micro-batch: each rank receives the (cp − 1)/cp of the whole sequence's K/V it lacks,
    over NVLink when the group (cp ranks, tp apart) lies within a node, else the network."""
    if layout.cp == 1:
        return 0.0
    setting = ActivationSetting(
        seq_len=cfg.train.seq_len,
        micro_batch=cfg.train.micro_batch_size,
        element_bytes=element_bytes,
        tp=layout.tp,
        cp=layout.cp,
    )
    link = _link(layout.tp * layout.cp, cluster)
    return ring_seconds(gathered_kv_bytes(cfg.model, setting), layout.cp, link, all_reduce=False) + (
        cluster.collective_latency_us * 1e-6
    )
