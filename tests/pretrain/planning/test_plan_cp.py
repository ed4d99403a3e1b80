"""Context parallelism in the planner (parallel.cp): activations per rank ÷ cp plus one
layer's gathered keys and values, counted by hand; ZeRO and the gradient reduction over
dp × cp; the key/value exchange on the link its group spans; and the search recommends cp
exactly when a sequence does not fit otherwise."""

from __future__ import annotations

import dataclasses

import pytest

from data_pipeline.command import compose_config
from pretrain.config import ParallelConfig, load_train_config
from pretrain.model.config import ModelConfig
from pretrain.plan import PlanConfig, plan
from pretrain.planning.activations import (
    ActivationSetting,
    gathered_kv_bytes,
    head_activation_bytes,
    layer_activation_bytes,
    stage_activations,
)
from pretrain.planning.preflight import CLUSTER_DIR, load_cluster
from pretrain.planning.search import Planner
from pretrain.planning.speed import ring_seconds

H100 = load_cluster(CLUSTER_DIR / "h100-80gb.yaml")
# d 64, 4 heads of 16, 2 kv heads, SwiGLU width 128, RMSNorm, no dropout.
TINY = ModelConfig(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=128, vocab_size=256, max_seq_len=64)


def test_a_layer_s_activations_per_rank_are_the_hand_count_divided_by_cp() -> None:
    """Bytes per token in fp32 (e = 4), h = 64, q = 64, kv = 2·16 = 32, f = 128:
    norms 2 · 2h·e = 1024 (RMSNorm keeps x and x·rstd), linear inputs 2h·e + q·e = 768,
    queries q·e = 256, attention output and logsumexp q·e + 4 heads · 4 = 272, SwiGLU
    4f·e = 2048: 4368 bytes per token on the rank's 64/cp tokens; and the keys and values
    attention keeps, 2·kv·e = 256 bytes per token of the whole sequence (gathered under cp)."""
    for cp in (1, 2, 4):
        setting = ActivationSetting(seq_len=64, micro_batch=1, element_bytes=4, cp=cp)
        assert layer_activation_bytes(TINY, setting) == 4368 * 64 / cp + 256 * 64
        assert gathered_kv_bytes(TINY, setting) == (0 if cp == 1 else 256 * 64)
        # On a CPU, SDPA keeps a float mask of the rank's queries × every key per layer.
        masked = dataclasses.replace(setting, dense_masks=1)
        assert layer_activation_bytes(TINY, masked) - layer_activation_bytes(TINY, setting) == 64 / cp * 64 * 4


def test_a_stage_s_activations_fall_with_cp_but_for_the_keys_and_values() -> None:
    whole = ActivationSetting(seq_len=64, micro_batch=2, element_bytes=4)
    per_layer, head = layer_activation_bytes(TINY, whole), head_activation_bytes(TINY, whole)
    kv = 2 * 2 * 64 * 32 * 4  # K and V, micro-batch 2, all 64 positions, fp32
    for cp in (2, 4):
        split = dataclasses.replace(whole, cp=cp)
        got = stage_activations(TINY, split, layers=2, in_flight=1, has_head=True)
        # Two layers' activations ÷ cp but their whole-sequence K/V, the head ÷ cp, and the
        # K/V gradients of the layer whose backward runs.
        assert got.stored == pytest.approx(2 * ((per_layer - kv) / cp + kv) + head / cp + kv)


PLANNERS: dict[int, Planner] = {}  # by node count: a planner caches its model's parameter shapes


def layout_plan(world: int, global_batch: int, nodes: int = 1, **parallel):  # type: ignore[no-untyped-def]
    """gpt-125m at seq 4096, micro-batch 1, on h100-80gb nodes."""
    seq_len = 4096
    cfg = load_train_config(
        [
            "model=gpt-125m",
            "model.vocab_size=32000",
            f"model.max_seq_len={seq_len}",
            f"train.seq_len={seq_len}",
            "train.micro_batch_size=1",
            f"train.global_batch_size={global_batch}",
        ]
    )
    cfg = dataclasses.replace(cfg, parallel=ParallelConfig(**parallel))
    planner = PLANNERS.setdefault(nodes, Planner(dataclasses.replace(H100, nodes=nodes)))
    return planner.plan(cfg, world)


@pytest.mark.parametrize("zero_stage", [0, 1, 2, 3])
def test_zero_partitions_and_the_gradient_reduction_span_dp_times_cp(zero_stage: int) -> None:
    """cp2 × dp2 holds the model states of dp4 and reduces over the same 4 ranks (equal
    micro-batches per step: global batch 4 on dp2, 8 on dp4)."""
    with_cp = layout_plan(4, global_batch=4, cp=2, zero_stage=zero_stage)
    plain = layout_plan(4, global_batch=8, zero_stage=zero_stage)
    a, b = with_cp.memory.fullest, plain.memory.fullest
    assert (a.weights, a.gradients, a.optimizer, a.buffers) == (b.weights, b.gradients, b.optimizer, b.buffers)
    assert with_cp.speed.data_parallel_s == pytest.approx(plain.speed.data_parallel_s, rel=1e-12)


@pytest.mark.parametrize("cp, nodes", [(2, 1), (8, 1), (16, 2)])
def test_the_key_value_exchange_takes_the_link_its_group_spans(cp: int, nodes: int) -> None:
    """Per layer and micro-batch: an all-gather and a reduce-scatter of the whole sequence's
    K and V (2 · 4096 · 768 · 2 bytes), each moving (cp − 1)/cp of it, plus the latency;
    NVLink within a node, the network across nodes."""
    cluster = dataclasses.replace(H100, nodes=nodes)
    dp = 8 * nodes // cp
    got = layout_plan(8 * nodes, global_batch=dp, nodes=nodes, cp=cp)  # one micro-batch per step
    kv = 2 * 4096 * 768 * 2
    link = cluster.intra_node_gb_per_s if cp <= 8 else cluster.inter_node_gb_per_s
    one = (cp - 1) / cp * kv / (link * 1e9) + cluster.collective_latency_us * 1e-6
    assert one == pytest.approx(ring_seconds(kv, cp, link, all_reduce=False) + 20e-6)
    assert got.speed.context_parallel_s == pytest.approx(12 * 2 * one, rel=1e-12)  # 12 layers
    assert layout_plan(8 * nodes, global_batch=8 * nodes, nodes=nodes).speed.context_parallel_s == 0


def plan_on_a_node(seq_len: int) -> list:
    return plan(
        compose_config(
            "plan",
            PlanConfig,
            [
                "model=gpt-1.3b",
                "cluster=h100-80gb",
                f"train.seq_len={seq_len}",
                f"model.max_seq_len={seq_len}",
                "train.global_batch_size=8",
            ],
        )
    )


def test_a_sequence_that_fits_no_layout_without_cp_is_planned_with_cp(capsys: pytest.CaptureFixture) -> None:
    plans = plan_on_a_node(524288)  # 512k tokens on 8 H100s
    assert not any(p.memory.fits for p in plans if p.layout.cp == 1)
    best = plans[0]
    assert best.memory.fits and best.layout.cp > 1
    assert f"parallel.cp={best.layout.cp}" in best.overrides()
    assert "overrides: " + " ".join(best.overrides()) in capsys.readouterr().out
    # The overrides select the same plan through the trainer's own config.
    cfg = load_train_config(
        ["model=gpt-1.3b", "model.vocab_size=32000", "train.seq_len=524288", "model.max_seq_len=524288"]
        + ["train.global_batch_size=8", *best.overrides()]
    )
    assert cfg.parallel.cp == best.layout.cp
    again = Planner(H100).plan(cfg, 8)
    assert again.speed.tokens_per_s == pytest.approx(best.speed.tokens_per_s, rel=1e-9)
    assert again.memory.fullest.total == pytest.approx(best.memory.fullest.total, rel=1e-9)


def test_a_short_sequence_keeps_cp_1() -> None:
    plans = plan_on_a_node(2048)
    assert plans[0].memory.fits and plans[0].layout.cp == 1
    assert any(p.layout.cp > 1 for p in plans)  # searched, and slower: the exchange is extra
