"""The layout planner against real runs, published figures and its own options.

- Exact: weights, gradients and optimizer state per rank equal the engine's tensors for
  every configs/parallel preset on a tiny and a small model (one 4-process torchrun launch).
- Activations: within 20 % of the CPU allocator's peak around one forward and backward.
- Published: the ZeRO paper's 7.5B model on 64 GPUs; Korthikanti et al.'s per-layer formula.
- Speed: a one-process step equals the roofline counted by hand from the model's weights.
- The command, ``plan=true``, the memory check, and every cluster constant's effect.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from data_pipeline.command import compose_config
from pretrain.config import ParallelConfig, Precision, load_train_config
from pretrain.model.config import Activation, ModelConfig, Norm
from pretrain.model.gpt import GPT
from pretrain.model.loss import sample_mean_loss
from pretrain.parallel.layout import validate_layout
from pretrain.plan import PlanConfig, plan
from pretrain.planning.activations import ActivationSetting, layer_activation_bytes, stage_activations
from pretrain.planning.cluster import ClusterConfig, machine_ram_bytes
from pretrain.planning.memory import StateBytes, model_state_bytes, rank_memory
from pretrain.planning.preflight import CLUSTER_DIR, LayoutDoesNotFit, load_cluster, preflight, this_machine
from pretrain.planning.search import Planner
from pretrain.planning.shapes import stage_parameters

REPO = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).parents[1] / "workers" / "plan_worker.py"
PRESETS = sorted(path.stem for path in (REPO / "configs" / "parallel").glob("*.yaml"))
MODELS = {
    "tiny": ["model=tiny"],
    "small": ["model=tiny", "model.n_layers=4", "model.d_model=128", "model.n_heads=4", "model.n_kv_heads=2"],
}
WORLD_SIZE = 4


def run_overrides(model: str, preset: str, corpus: Path, run_dir: Path) -> list[str]:
    return [
        *MODELS[model],
        f"parallel={preset}",
        f"data.path={corpus}",
        f"run_dir={run_dir}",
        "train.seq_len=32",
        "train.micro_batch_size=2",
        "train.global_batch_size=8",
        "train.max_steps=1",
        "train.eval_every=0",
        "train.save_every=0",
        "logging.progress_bar=false",
    ]


@pytest.fixture(scope="module")
def held_by_engine(token_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """Bytes each rank holds, for every preset and model, from one 4-process launch."""
    workdir = tmp_path_factory.mktemp("plan")
    runs = {f"{m}/{p}": run_overrides(m, p, token_corpus, workdir / m / p) for m in MODELS for p in PRESETS}
    runs_file, out_file = workdir / "runs.json", workdir / "held.json"
    runs_file.write_text(json.dumps(runs))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    }
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={WORLD_SIZE}",
        str(WORKER),
        str(runs_file),
        str(out_file),
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-5000:]
    return json.loads(out_file.read_text())


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("preset", PRESETS)
def test_model_states_equal_what_the_engine_holds(
    model: str, preset: str, held_by_engine: dict, token_corpus: Path
) -> None:
    cfg = load_train_config([*run_overrides(model, preset, token_corpus, Path("unused")), "model.vocab_size=256"])
    layout = validate_layout(cfg, WORLD_SIZE)
    par = cfg.parallel
    stages = stage_parameters(cfg.model, par.tp, par.pp, cfg.optim, par.partition_method)
    for rank, held in enumerate(held_by_engine[f"{model}/{preset}"]):
        stage = rank // (layout.gradient_peers * layout.tp)  # ranks are [pp][dp][cp][tp]: pipe is the slowest axis
        predicted = rank_memory(cfg, layout, Precision.fp32, stages, stage)
        assert {
            "weights": predicted.weights,
            "gradients": predicted.gradients,
            "optimizer": predicted.optimizer,
        } == held, rank


# The peak of live tensor memory on the CPU around a piece of code: a stand-in for the CUDA
# allocator's peak statistics, which the CPU allocator does not keep.
#
# Every storage an operation allocates (not a view or an in-place result of its inputs) is
# counted until it is freed (weak references on the storage objects, which torch keeps alive
# as long as the storage).
class PeakMemory(TorchDispatchMode):
    """``with PeakMemory() as probe: ...``; then ``probe.peak`` bytes above the start."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._tracked: set[int] = set()

    def _release(self, key: int, size: int) -> None:
        self.live -= size
        self._tracked.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None) -> Any:  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        # Views and in-place results share an input's storage: nothing new was allocated.
        inputs = {
            t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)
        }
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor) or tensor.device.type != "cpu":
                continue
            storage = tensor.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if size and key not in self._tracked and key not in inputs:
                self._tracked.add(key)
                self.live += size
                weakref.finalize(storage, self._release, key, size)
        self.peak = max(self.peak, self.live)
        return out


def measured_activation_peak(cfg: ModelConfig, seq_len: int, batch: int, recompute: bool) -> int:
    """Peak bytes allocated above the start around one forward and backward (gradients
    already allocated, as from the second step on)."""
    torch.manual_seed(0)
    model = GPT(cfg)
    model.activation_checkpointing = recompute
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq_len))
    with PeakMemory() as probe:
        losses = model.layers.token_losses(model(ids), ids)
        sample_mean_loss(losses, torch.ones_like(ids, dtype=torch.bool)).backward()
    return probe.peak


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("seq_len", [256, 1024])
@pytest.mark.parametrize("recompute", [False, True])
def test_activations_within_20_percent_of_the_measured_peak(model: str, seq_len: int, recompute: bool) -> None:
    cfg = load_train_config([*MODELS[model], "model.vocab_size=256", f"model.max_seq_len={seq_len}"]).model
    batch = 1
    setting = ActivationSetting(seq_len=seq_len, micro_batch=batch, element_bytes=4)
    predicted = stage_activations(cfg, setting, layers=cfg.n_layers, in_flight=1, has_head=True)
    expected = predicted.recomputed if recompute else predicted.stored
    assert measured_activation_peak(cfg, seq_len, batch, recompute) == pytest.approx(expected, rel=0.2)


@pytest.mark.parametrize("stage, gigabytes", [(1, 31.4), (2, 16.6), (3, 1.9)])
def test_zero_paper_memory_of_a_7_5b_model_on_64_gpus(stage: int, gigabytes: float) -> None:
    """Rajbhandari et al. 2020, figure 1: Ψ = 7.5B, N = 64, K = 12 (mixed-precision Adam);
    the paper keeps whole gradients at stage 1."""
    params, ranks = 7_500_000_000, 64
    states = model_state_bytes(params, params // ranks, stage, StateBytes(weight=2, gradient=2, optimizer=12), 2)
    assert round(sum(states) / 1e9, 1) == gigabytes


def megatron_layer(hidden: int, heads: int) -> ModelConfig:
    """The transformer layer of Korthikanti et al. 2022: LayerNorm, GELU MLP of 4h, dropout."""
    return ModelConfig(
        d_model=hidden,
        n_heads=heads,
        norm=Norm.layernorm,
        activation=Activation.gelu,
        d_ff=4 * hidden,
        residual_dropout=0.1,
        attn_dropout=0.1,
        vocab_size=51200,
        max_seq_len=2048,
    )


@pytest.mark.parametrize("tp, sequence_parallel", [(1, False), (8, False), (8, True)])
def test_korthikanti_activation_formula(tp: int, sequence_parallel: bool) -> None:
    """Section 4: sbh(34 + 5as/h) bytes per layer; sbh(10 + 24/t + 5as/(ht)) with tensor
    parallelism; sbh/t (34 + 5as/h) with sequence parallelism (GPT-3 175B's shape)."""
    s, b, h, a = 2048, 1, 12288, 96
    setting = ActivationSetting(
        seq_len=s, micro_batch=b, element_bytes=2, tp=tp, sequence_parallel=sequence_parallel, fused_attention=False
    )
    if sequence_parallel:
        expected = s * b * h / tp * (34 + 5 * a * s / h)
    else:
        expected = s * b * h * (10 + 24 / tp + 5 * a * s / (h * tp))
    assert layer_activation_bytes(megatron_layer(h, a), setting) == pytest.approx(expected, rel=1e-12)


def plan_config(*overrides: str) -> PlanConfig:
    return compose_config("plan", PlanConfig, list(overrides))


def test_plan_lists_layouts_best_first_with_the_issue_fields(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "plan.jsonl"
    plans = plan(
        plan_config(
            "model=gpt-1.3b",
            "cluster=a100-80gb",
            "cluster.nodes=2",
            "train.global_batch_size=256",
            f"output={output}",
            "top=3",
        )
    )
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(records) == len(plans) > 3
    for field in (
        "tp",
        "pp",
        "dp",
        "zero_stage",
        "micro_batch_size",
        "activation_checkpointing",
        "fits",
        "step_s",
        "tokens_per_s",
        "mfu",
    ):
        assert field in records[0]
    assert set(records[0]["memory_gb"]) >= {"weights", "gradients", "optimizer", "activations", "total"}
    fitting = [r for r in records if r["fits"]]
    assert fitting and records[: len(fitting)] == fitting  # every fitting layout before any other
    assert [r["tokens_per_s"] for r in fitting] == sorted((r["tokens_per_s"] for r in fitting), reverse=True)
    assert all(r["tp"] * r["pp"] * r["cp"] * r["dp"] == 16 for r in records)
    printed = capsys.readouterr().out
    assert "overrides: " + " ".join(records[0]["overrides"]) in printed
    assert (
        len([line for line in printed.splitlines() if line.strip().startswith(("1 ", "2 ", "3 ", "4 "))]) == 3
    )  # top=3 rows
    # The recommended overrides give the same plan through the trainer's own config.
    cfg = load_train_config(
        [
            "model=gpt-1.3b",
            "model.vocab_size=32000",
            "train.seq_len=2048",
            "train.global_batch_size=256",
            *records[0]["overrides"],
        ]
    )
    again = Planner(load_cluster(CLUSTER_DIR / "a100-80gb.yaml")).plan(cfg, 16)
    assert again.speed.tokens_per_s == pytest.approx(records[0]["tokens_per_s"], rel=1e-6)


def test_plan_says_when_nothing_fits(capsys: pytest.CaptureFixture) -> None:
    plans = plan(
        plan_config("model=gpt-13b", "cluster=h100-80gb", "cluster.gpus_per_node=1", "train.global_batch_size=8")
    )
    assert not any(p.memory.fits for p in plans)
    assert "nothing fits; the smallest" in capsys.readouterr().out
    assert plans[0].memory.fullest.total == min(p.memory.fullest.total for p in plans)


def test_plan_command_line(run_module, tmp_path: Path) -> None:
    done = run_module(
        "pretrain.plan",
        "model=tiny",
        "cluster=cpu",
        "cluster.gpus_per_node=2",
        "train.seq_len=128",
        "train.global_batch_size=8",
        "model.vocab_size=256",
        "output=plan.jsonl",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "recommended:" in done.stdout and (tmp_path / "plan.jsonl").exists()
    bad = run_module("pretrain.plan", "cluster.gpus_per_nod=2", cwd=tmp_path)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines() == [
        "error: unknown setting cluster.gpus_per_nod (ClusterConfig); did you mean cluster.gpus_per_node?"
    ]


TRAIN_BASE = ["model.vocab_size=256", "train.seq_len=64", "train.micro_batch_size=2", "train.global_batch_size=4"]


def test_train_plan_true_prints_the_plan_and_exits(capsys: pytest.CaptureFixture) -> None:
    assert preflight(load_train_config([*TRAIN_BASE, "plan=true"]), world_size=1)
    assert "memory of the fullest rank" in capsys.readouterr().out
    assert not preflight(load_train_config(TRAIN_BASE), world_size=1)  # fits: training goes on


def test_a_start_that_would_not_fit_is_refused_with_the_numbers() -> None:
    big = [*TRAIN_BASE, "model=gpt-13b", "train.seq_len=2048", "train.micro_batch_size=4"]
    with pytest.raises(LayoutDoesNotFit, match=r"predicted memory per device [\d.]+ GB \(weights .*memory_check=false"):
        preflight(load_train_config(big), world_size=1)
    assert not preflight(load_train_config([*big, "memory_check=false"]), world_size=1)


def test_train_command_refuses_before_any_process_group(run_module, tmp_path: Path) -> None:
    done = run_module(
        "pretrain.train",
        *TRAIN_BASE,
        "model=gpt-13b",
        "train.seq_len=2048",
        f"run_dir={tmp_path}/run",
        "data.path=/nonexistent",
        cwd=tmp_path,
    )
    assert done.returncode != 0
    # One line, before data.path is even looked at.
    assert done.stderr.strip().splitlines()[-1].startswith("error: predicted memory per device"), done.stderr


def layout_plan(cluster: ClusterConfig, world: int, **parallel):  # type: ignore[no-untyped-def]
    cfg = load_train_config(
        [
            "model=gpt-1.3b",
            "model.vocab_size=32000",
            "train.seq_len=2048",
            "train.micro_batch_size=2",
            "train.global_batch_size=64",
        ]
    )
    cfg = dataclasses.replace(cfg, parallel=ParallelConfig(**parallel))
    return Planner(cluster).plan(cfg, world)


H100 = load_cluster(CLUSTER_DIR / "h100-80gb.yaml")


def test_the_plan_counts_parallel_sequence_parallel() -> None:
    """parallel.sequence_parallel reaches the memory plan: the norms' activations split over
    tp (measured against autograd in tests/pretrain/parallel/test_tensor_parallel_comm.py)."""
    plain, split = (layout_plan(H100, 8, tp=8, sequence_parallel=on) for on in (False, True))
    cfg, layers = split.config, split.config.model.n_layers
    settings = [
        ActivationSetting(
            seq_len=2048, micro_batch=2, element_bytes=2, tp=8, sequence_parallel=on, sharded_linear_inputs=False
        )
        for on in (False, True)
    ]
    expected = [
        stage_activations(cfg.model, setting, layers, in_flight=1, has_head=True).stored for setting in settings
    ]
    assert expected[1] < expected[0]
    assert [plain.memory.fullest.activations_stored, split.memory.fullest.activations_stored] == pytest.approx(expected)


@pytest.mark.parametrize(
    "setting, factor, parallel, nodes, part",
    [
        ("peak_tflops", 2.0, {}, 1, "compute_s"),
        ("matmul_efficiency", 2.0, {}, 1, "compute_s"),
        ("intra_node_gb_per_s", 2.0, {"tp": 8}, 1, "tensor_parallel_s"),
        ("collective_latency_us", 10.0, {"tp": 8}, 1, "tensor_parallel_s"),
        ("inter_node_gb_per_s", 2.0, {"zero_stage": 1}, 2, "data_parallel_s"),
        ("memory_bandwidth_gb_per_s", 2.0, {}, 1, "optimizer_s"),
        ("step_overhead_ms", 10.0, {}, 1, "step_s"),
    ],
)
def test_every_speed_constant_moves_its_part_of_the_step(
    setting: str, factor: float, parallel: dict, nodes: int, part: str
) -> None:
    base = dataclasses.replace(H100, nodes=nodes)
    changed = dataclasses.replace(base, **{setting: getattr(base, setting) * factor})
    before = getattr(layout_plan(base, base.world_size, **parallel).speed, part)
    after = getattr(layout_plan(changed, base.world_size, **parallel).speed, part)
    grows = setting in ("collective_latency_us", "step_overhead_ms")
    assert (after > before) if grows else (after < before), (before, after)


@pytest.mark.parametrize("setting, value", [("memory_gib", 10.0), ("memory_margin", 0.95)])
def test_memory_settings_decide_what_fits(setting: str, value: float) -> None:
    assert layout_plan(H100, 8).memory.fits
    assert not layout_plan(dataclasses.replace(H100, **{setting: value}), 8).memory.fits


def test_the_processes_of_a_cpu_machine_share_its_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = dataclasses.replace(load_cluster(CLUSTER_DIR / "cpu.yaml"), gpus_per_node=2, memory_gib=8.0)
    assert cpu.device_memory_bytes() == 4 * 2**30
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # as torchrun sets it: 4 processes, 2 per node
    machine = this_machine(4)
    assert (machine.nodes, machine.gpus_per_node) == (
        2,
        2,
    ) and machine.device_memory_bytes() == machine_ram_bytes() // 2
    assert dataclasses.replace(H100, gpus_per_node=2).device_memory_bytes() == int(H100.memory_gib * 2**30)


def test_empty_buckets_count_on_a_gpu_but_not_in_a_cpu_s_ram() -> None:
    cpu = dataclasses.replace(load_cluster(CLUSTER_DIR / "cpu.yaml"), gpus_per_node=8)
    assert layout_plan(H100, 8, zero_stage=1).memory.fullest.buffers == 5 * 10**8 * 4  # one fp32 bucket
    assert layout_plan(cpu, 8, zero_stage=1).memory.fullest.buffers == 0


def test_bf16_and_precision_follow_the_cluster() -> None:
    plan_gpu = layout_plan(H100, 8, zero_stage=1)
    assert plan_gpu.precision is Precision.bf16
    rank = plan_gpu.memory.fullest
    params = sum(
        stage_parameters(plan_gpu.config.model, 1, 1, plan_gpu.config.optim, plan_gpu.config.parallel.partition_method)[
            0
        ].sizes
    )
    assert (
        rank.weights == 2 * params and rank.gradients == 4 * params
    )  # DeepSpeed's BF16_Optimizer: whole fp32 gradients


def test_gpu_benchmark_dry_run_predicts_the_gpu_cases() -> None:
    script = REPO / "benchmarks" / "plan_vs_measured.py"
    done = subprocess.run(
        [sys.executable, str(script), "--device", "gpu", "--dry-run", "--cluster", "h200"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| gpt-350m", "| gpt-1.3b"))]
    assert len(rows) == 2 and all(float(row.split("|")[3]) > 1000 for row in rows)  # predicted tokens/s
    assert "-m pretrain.train" in done.stdout and "model=gpt-1.3b" in done.stdout


@pytest.mark.parametrize("model", sorted(MODELS))
def test_a_one_process_step_is_the_hand_counted_roofline(model: str) -> None:
    """One CPU process, fp32 AdamW: the step the planner predicts is the matmul FLOPs counted
    by hand from the model's weights at the cluster's effective rate, plus reading and writing
    16 bytes per parameter (weights, gradients, two moments) at memory bandwidth, plus the
    fixed overhead (docs/plan.md). Independent of how configs/cluster/cpu.yaml was calibrated."""
    seq_len, global_batch = 256, 16
    cfg = load_train_config(
        [
            *MODELS[model],
            "parallel=single",
            "model.vocab_size=256",
            f"train.seq_len={seq_len}",
            f"model.max_seq_len={seq_len}",
            "train.micro_batch_size=8",
            f"train.global_batch_size={global_batch}",
        ]
    )
    cpu = dataclasses.replace(load_cluster(CLUSTER_DIR / "cpu.yaml"), gpus_per_node=1)
    speed = Planner(cpu).plan(cfg, 1).speed
    with torch.device("meta"):
        gpt = GPT(cfg.model)
    lookups = {id(m.weight) for m in gpt.modules() if isinstance(m, torch.nn.Embedding)}
    matrices = sum(p.numel() for p in gpt.parameters() if p.dim() == 2 and id(p) not in lookups)
    if cfg.model.tie_embeddings:  # the output projection multiplies by the embedding table
        matrices += gpt.embed.tokens.weight.numel()
    parameters = sum(p.numel() for p in gpt.parameters())
    # 6 FLOPs per weight and token (forward 2, backward 4); q·kᵀ and the weighted sum of v:
    # 2 · seq · width each per layer in the forward, 3× with the backward (PaLM, appendix B).
    flops_per_token = 6 * matrices + 3 * 2 * 2 * seq_len * cfg.model.d_model * cfg.model.n_layers
    compute = global_batch * seq_len * flops_per_token / (cpu.peak_tflops * 1e12 * cpu.matmul_efficiency)
    optimizer = 2 * 16 * parameters / (cpu.memory_bandwidth_gb_per_s * 1e9)
    assert speed.compute_s == pytest.approx(compute, rel=1e-9)
    assert speed.optimizer_s == pytest.approx(optimizer, rel=1e-3)  # + the optimizer's step counters
    assert speed.step_s == pytest.approx(compute + optimizer + cpu.step_overhead_ms / 1e3, rel=1e-6)
    assert speed.tokens_per_s == pytest.approx(global_batch * seq_len / speed.step_s, rel=1e-12)
    assert (speed.tensor_parallel_s, speed.data_parallel_s, speed.bubble_fraction) == (0, 0, 0)


def test_a_gpu_is_planned_with_its_cluster_config_and_its_real_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda device=None: type("P", (), {"total_memory": 100 * 2**30})
    )
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    machine = this_machine(16)
    assert (machine.name, machine.memory_gib, machine.nodes, machine.gpus_per_node) == ("h200", 100.0, 2, 8)
    assert machine.bf16 and machine.untouched_memory_counts
