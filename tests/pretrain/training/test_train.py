"""The training loop in one process: learning, exact resume, checkpoints, metrics, policies."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import pretrain.training.run_dir as run_dir_module
import pretrain.training.step as step_module
from pretrain.checkpoint.directory import checkpoint_root, latest_complete
from pretrain.config import OptimConfig, Schedule, TrainConfig, load_train_config
from pretrain.model.config import ModelConfig
from pretrain.model.gpt import GPT
from pretrain.parallel.process_groups import ProcessInfo, init_distributed
from pretrain.training.optim import NonFiniteLossError, lr_multiplier, parameter_groups
from pretrain.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def process() -> ProcessInfo:
    return init_distributed()


# The tiny runs of these tests, besides data and run dir.
SETTINGS = [
    "train.seq_len=32",
    "train.micro_batch_size=4",
    "train.global_batch_size=8",
    "train.log_every=1",
    "train.eval_every=0",
    "train.save_every=0",
    "optim.lr=3e-3",
    "optim.warmup_steps=2",
    "logging.progress_bar=false",
]


def config(corpus: Path, run_dir: Path, *overrides: str) -> TrainConfig:
    return load_train_config([f"data.path={corpus}", f"run_dir={run_dir}", *SETTINGS, *overrides])


def losses(records: list[dict]) -> list[float]:
    return [r["loss"] for r in records]


@pytest.mark.parametrize("objective", ["clm", "mlm", "span"])
def test_each_objective_brings_the_loss_down(
    objective: str, token_corpus: Path, tmp_path: Path, process: ProcessInfo
) -> None:
    records = Trainer(config(token_corpus, tmp_path, f"objective={objective}", "train.max_steps=30"), process).fit()
    curve = losses(records)
    assert sum(curve[-3:]) / 3 < 0.75 * sum(curve[:3]) / 3, curve


def test_resume_continues_exactly(token_corpus: Path, tmp_path: Path, process: ProcessInfo) -> None:
    # MLM with dropout exercises the saved RNG state and the per-sample masking noise.
    common = ("objective=mlm", "model.residual_dropout=0.1", "optim.schedule=constant", "train.micro_batch_size=2")
    straight = Trainer(config(token_corpus, tmp_path / "straight", *common, "train.max_steps=6"), process).fit()
    first_half = Trainer(config(token_corpus, tmp_path / "resumed", *common, "train.max_steps=3"), process).fit()
    resumed = Trainer(config(token_corpus, tmp_path / "resumed", *common, "train.max_steps=6"), process)
    assert resumed.step == 3 and resumed.consumed_samples == 24
    second_half = resumed.fit()
    assert losses(first_half) + losses(second_half) == losses(straight)


def test_adam_state_crosses_a_change_of_zero_stage(token_corpus: Path, tmp_path: Path, process: ProcessInfo) -> None:
    """ZeRO-0 keeps Adam's moments per parameter, ZeRO-1 in flat partitions: resuming one
    under the other goes through the sharded checkpoint and must continue exactly."""
    common = ("optim.schedule=constant", "optim.warmup_steps=0")
    straight = Trainer(config(token_corpus, tmp_path / "straight", *common, "train.max_steps=5"), process).fit()
    Trainer(config(token_corpus, tmp_path / "resharded", *common, "train.max_steps=3"), process).fit()
    resumed = Trainer(
        config(token_corpus, tmp_path / "resharded", *common, "train.max_steps=5", "parallel=zero1"), process
    )
    assert resumed.step == 3
    assert losses(resumed.fit()) == pytest.approx(losses(straight)[3:], rel=1e-6)


def test_cut_off_checkpoint_is_skipped(token_corpus: Path, tmp_path: Path, process: ProcessInfo) -> None:
    Trainer(config(token_corpus, tmp_path, "train.max_steps=2"), process).fit()
    good = latest_complete(checkpoint_root(tmp_path))
    assert good is not None and good.name == "step-00000002"
    # A later checkpoint whose write was cut off: a rank's shard is there, truncated, no marker.
    broken = checkpoint_root(tmp_path) / "step-00000004"
    (broken / "shards").mkdir(parents=True)
    data = (good / "shards" / "rank-00000.safetensors").read_bytes()
    (broken / "shards" / "rank-00000.safetensors").write_bytes(data[: len(data) // 2])
    resumed = Trainer(config(token_corpus, tmp_path, "train.max_steps=4"), process)
    assert resumed.resumed_from == good and resumed.step == 2
    resumed.fit()
    assert latest_complete(checkpoint_root(tmp_path)) == broken  # rewritten whole, then marked complete


def test_checkpoints_keep_the_last_k(token_corpus: Path, tmp_path: Path, process: ProcessInfo) -> None:
    Trainer(
        config(token_corpus, tmp_path, "train.max_steps=5", "train.save_every=1", "train.keep_last=2"), process
    ).fit()
    names = sorted(p.name for p in checkpoint_root(tmp_path).iterdir())
    assert names == ["step-00000004", "step-00000005"]
    metadata = json.loads((checkpoint_root(tmp_path) / "step-00000005" / "complete.json").read_text())
    assert metadata["consumed_samples"] == 40 and metadata["tokenizer"]["eos_id"] == 2
    assert metadata["config"]["model"]["name"] == "tiny"


def hand_flops_per_token(model: GPT, seq_len: int) -> float:
    """Training FLOPs per token counted from the model's own weights: every weight matrix a
    token meets (all 2-D parameters but embedding tables, which are lookups, and the output
    projection, the token table itself when tied) costs 2 FLOPs in the forward and 4 in the
    backward; per layer, the scores q·kᵀ and their use on v cost 2 · seq · width each in the
    forward, 3× that with the backward (PaLM, appendix B)."""
    lookups = {id(module.weight) for module in model.modules() if isinstance(module, torch.nn.Embedding)}
    matrices = sum(p.numel() for p in model.parameters() if p.dim() == 2 and id(p) not in lookups)
    if model.cfg.tie_embeddings:
        matrices += model.embed.tokens.weight.numel()
    n_layers, attention_width = len(model.blocks), model.blocks[0].attn.wq.weight.shape[0]
    return 6.0 * matrices + 3 * n_layers * 2 * (2 * seq_len * attention_width)


def test_metrics_file_has_the_promised_fields(token_corpus: Path, tmp_path: Path, process: ProcessInfo) -> None:
    trainer = Trainer(
        config(
            token_corpus,
            tmp_path,
            "train.max_steps=4",
            "train.log_every=2",
            "train.eval_every=4",
            "train.peak_tflops=0.05",
        ),
        process,
    )
    trainer.fit()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4]
    flops = hand_flops_per_token(trainer.engine.module, seq_len=32)
    for line in lines:
        assert {"step", "loss", "lr", "step_s", "tokens_per_s", "grad_norm", "mfu", "memory_gb"} <= set(line)
        assert line["tokens_per_s"] > 0 and line["grad_norm"] > 0
        # 8 samples of 32 tokens a step, one process
        assert line["tokens_per_s"] == pytest.approx(8 * 32 / line["step_s"], rel=1e-9)
        assert line["tflops_per_device"] == pytest.approx(flops * line["tokens_per_s"] / 1e12, rel=1e-9)
        assert line["mfu"] == pytest.approx(line["tflops_per_device"] / 0.05, rel=1e-9)
    assert "val_loss" in lines[1] and lines[1]["val_ppl"] == pytest.approx(2.718281828 ** lines[1]["val_loss"])


def nan_on_call(number: int):
    real = step_module.sample_mean_loss
    calls = {"n": 0}

    def loss(*args):
        calls["n"] += 1
        value = real(*args)
        return value * float("nan") if calls["n"] == number else value

    return loss


@pytest.mark.parametrize("layout", ["single", "zero1"])  # zero1: DeepSpeed itself skips the step
def test_nonfinite_step_is_skipped_and_reported(
    layout: str, token_corpus: Path, tmp_path: Path, process: ProcessInfo, monkeypatch
) -> None:
    trainer = Trainer(
        config(token_corpus, tmp_path, "train.max_steps=3", "train.nonfinite_policy=skip", f"parallel={layout}"),
        process,
    )
    monkeypatch.setattr(step_module, "sample_mean_loss", nan_on_call(4))  # step 2, second micro-batch
    trainer.train_step()
    before = [p.detach().clone() for p in trainer.engine.module.parameters()]
    result = trainer.train_step()
    assert result.skipped and trainer.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.engine.module.parameters()))
    assert not trainer.train_step().skipped  # training goes on, and updates again
    assert not all(torch.equal(a, b) for a, b in zip(before, trainer.engine.module.parameters()))


@pytest.mark.parametrize("layout", ["single", "zero1"])
def test_nonfinite_step_stops_when_told(
    layout: str, token_corpus: Path, tmp_path: Path, process: ProcessInfo, monkeypatch
) -> None:
    trainer = Trainer(
        config(token_corpus, tmp_path, "train.max_steps=3", "train.nonfinite_policy=stop", f"parallel={layout}"),
        process,
    )
    monkeypatch.setattr(step_module, "sample_mean_loss", nan_on_call(3))
    with pytest.raises(NonFiniteLossError, match="step 2"):
        trainer.fit()


def test_prefetched_batches_train_exactly_like_batches_built_in_place(
    token_corpus: Path, tmp_path: Path, process: ProcessInfo, monkeypatch
) -> None:
    """#16: the next step's batches are built on a background thread; the losses are the
    same, to the bit, as with every step's batches built in place (MLM: noise per sample)."""
    settings = ("train.max_steps=4", "objective=mlm", "train.eval_every=0")
    trainer = Trainer(config(token_corpus, tmp_path / "prefetched", *settings), process)
    real_sample = trainer.stream.sample
    threads: list[str] = []

    def sample(positions):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread().name)
        return real_sample(positions)

    monkeypatch.setattr(trainer.stream, "sample", sample)
    prefetched = [record["loss"] for record in trainer.fit()]
    grad_accum = trainer.plan.grad_accum
    assert [name.startswith("prefetch-batches") for name in threads] == [False] * grad_accum + [True] * 3 * grad_accum

    in_place = Trainer(config(token_corpus, tmp_path / "in_place", *settings), process)

    class BuiltInPlace:
        def __call__(self, consumed_samples: int, *, prefetch_next: bool):  # type: ignore[no-untyped-def]
            positions = [in_place.plan.positions(consumed_samples, m, 0) for m in range(grad_accum)]
            samples = [in_place.stream.sample(p) for p in positions]
            return samples, [in_place.make_batch(s.windows, s.positions) for s in samples]

        def close(self) -> None:
            pass

    monkeypatch.setattr(in_place, "step_batches", BuiltInPlace())
    assert [record["loss"] for record in in_place.fit()] == prefetched


HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")


def test_steps_between_log_steps_read_nothing_back(
    token_corpus: Path, tmp_path: Path, process: ProcessInfo, monkeypatch
) -> None:
    """#16: the loss and the non-finite guard stay on the device between log steps (a read
    would wait for the GPU); the window is read on the log step, the skipped step reported."""
    cfg = config(
        token_corpus,
        tmp_path,
        "train.max_steps=6",
        "train.log_every=3",
        "train.eval_every=0",
        "train.nonfinite_policy=skip",
    )
    trainer = Trainer(cfg, process)
    monkeypatch.setattr(step_module, "sample_mean_loss", nan_on_call(3))  # step 2 (not a log step) is skipped
    ours = str(REPO / "pretrain")
    phase = {"now": "start-up"}
    reads: dict[str, list[str]] = {"log step": [], "other step": []}
    for name in HOST_READS:
        real = getattr(torch.Tensor, name)

        def counted(self, *args, _real=real, _name=name):  # type: ignore[no-untyped-def]
            caller = sys._getframe(1)
            if phase["now"] in reads and caller.f_code.co_filename.startswith(ours):
                reads[phase["now"]].append(f"{_name} at {caller.f_code.co_filename}:{caller.f_lineno}")
            return _real(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counted)
    real_step = trainer.train_step

    def step(with_grad_norm: bool = True):  # type: ignore[no-untyped-def]
        phase["now"] = "log step" if with_grad_norm else "other step"  # until the next step: its hooks too
        return real_step(with_grad_norm)

    monkeypatch.setattr(trainer, "train_step", step)
    records = trainer.fit()
    assert reads["other step"] == []
    assert reads["log step"]  # the counting sees reads where there are some
    assert [r["step"] for r in records] == [3, 6] and [r["skipped_steps"] for r in records] == [1, 1]
    assert "step 2: non-finite loss; the update was skipped" in (tmp_path / "train.log").read_text()


def test_bad_batch_arithmetic_is_one_clear_error(token_corpus: Path, tmp_path: Path, process: ProcessInfo) -> None:
    with pytest.raises(ValueError, match="train.global_batch_size=10"):
        Trainer(config(token_corpus, tmp_path, "train.global_batch_size=10"), process)


def test_missing_data_and_unwritable_run_dir_fail_early(
    token_corpus: Path, tmp_path: Path, process: ProcessInfo
) -> None:
    with pytest.raises(Exception, match="data.path"):
        Trainer(config(tmp_path / "nowhere", tmp_path), process)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError, match="run_dir"):
        Trainer(config(token_corpus, blocker / "run"), process)


def test_too_little_data_and_a_used_run_dir_are_clear_errors(
    token_corpus: Path, tmp_path: Path, process: ProcessInfo
) -> None:
    with pytest.raises(ValueError, match="lower train.seq_len"):
        Trainer(
            config(token_corpus, tmp_path, "train.seq_len=256", "model.max_seq_len=100000", "train.seq_len=60000"),
            process,
        )
    Trainer(config(token_corpus, tmp_path / "used", "train.max_steps=1"), process).fit()
    with pytest.raises(FileExistsError, match="resume=never"):
        Trainer(config(token_corpus, tmp_path / "used", "resume=never"), process)


def test_a_full_disk_is_reported_before_training(
    token_corpus: Path, tmp_path: Path, process: ProcessInfo, monkeypatch
) -> None:
    monkeypatch.setattr(
        run_dir_module.shutil, "disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9 - 1000, free=1000)
    )
    with pytest.raises(OSError, match="free space or choose another run_dir"):
        Trainer(config(token_corpus, tmp_path), process)
    assert not (tmp_path / "metrics.jsonl").exists()  # stopped before anything was written


def test_the_disk_check_uses_the_measured_checkpoint_size_and_keep_last(
    token_corpus: Path, tmp_path: Path, process: ProcessInfo, monkeypatch
) -> None:
    trainer = Trainer(config(token_corpus, tmp_path / "measured", "train.max_steps=1"), process)
    trainer.fit()
    written = sum(
        f.stat().st_size for f in latest_complete(checkpoint_root(tmp_path / "measured")).rglob("*") if f.is_file()
    )
    per_checkpoint = 12 * trainer.num_parameters  # fp32 weights and AdamW's two moments
    assert written == pytest.approx(per_checkpoint, rel=0.02)
    from safetensors.torch import load_file  # the streamed shard is a standard safetensors file

    shard = load_file(latest_complete(checkpoint_root(tmp_path / "measured")) / "shards" / "rank-00000.safetensors")
    assert sum(t.numel() for t in shard.values()) == 3 * trainer.num_parameters
    free = SimpleNamespace(total=10**12, used=0, free=3 * per_checkpoint)
    monkeypatch.setattr(run_dir_module.shutil, "disk_usage", lambda path: free)
    Trainer(config(token_corpus, tmp_path / "two", "train.keep_last=2"), process)  # 2 kept + 1 being written
    with pytest.raises(OSError, match="train.keep_last=3"):
        Trainer(config(token_corpus, tmp_path / "four", "train.keep_last=3"), process)


def test_fp16_tracks_fp32_and_saves_fp32_masters(
    token_corpus: Path, tmp_path: Path, process: ProcessInfo, monkeypatch
) -> None:
    """ZeRO 0 with dynamic loss scaling. DeepSpeed's CPU accelerator declares no fp16 (torch's
    CPU kernels have it): told otherwise, the ZeRO-0 path runs; ZeRO 1-3 still refuse it on
    CPU. bf16 under every stage and layout is in test_checkpoint_state.py."""
    from deepspeed.accelerator import get_accelerator

    monkeypatch.setattr(type(get_accelerator()), "is_fp16_supported", lambda self: True)
    common = ("optim.schedule=constant", "optim.warmup_steps=0", "train.max_steps=10")
    fp32 = Trainer(config(token_corpus, tmp_path / "fp32", *common, "train.precision=fp32"), process).fit()
    fp16 = Trainer(config(token_corpus, tmp_path / "fp16", *common, "train.precision=fp16"), process).fit()
    # Before the loss was scaled here: 5.21 against 5.16 after one step (no clipping, eps-bound AdamW).
    assert losses(fp16) == pytest.approx(losses(fp32), rel=2e-3)
    assert fp16[0]["grad_norm"] == pytest.approx(fp32[0]["grad_norm"], rel=1e-2)  # reported unscaled
    from pretrain.checkpoint.sharded import ShardedState

    with ShardedState(latest_complete(checkpoint_root(tmp_path / "fp16"))) as saved:
        weight = saved.full("blocks.0.attn.wq.weight", "param")
        assert (weight.half().float() != weight).float().mean() > 0.5  # fp32 masters, not fp16 weights
        assert saved.full("blocks.0.attn.wq.weight", "exp_avg_sq").abs().sum() > 0


def test_fp16_resume_keeps_the_dynamic_loss_scale(
    token_corpus: Path, tmp_path: Path, process: ProcessInfo, monkeypatch
) -> None:
    """A scale of 2^20 overflows the first steps, each halving it; a run resumed in that phase
    must go on from the lowered scale, not start again from 2^20 (two more skipped updates)."""
    from deepspeed.accelerator import get_accelerator

    import pretrain.training.build as build_module

    monkeypatch.setattr(type(get_accelerator()), "is_fp16_supported", lambda self: True)
    build_config = build_module.deepspeed_config

    def high_initial_scale(*args, **kwargs):  # type: ignore[no-untyped-def]
        ds_config = build_config(*args, **kwargs)
        ds_config["fp16"]["initial_scale_power"] = 20
        return ds_config

    monkeypatch.setattr(build_module, "deepspeed_config", high_initial_scale)
    # A warm-up: an overflowed step must not advance the schedule, before or after the resume.
    common = ("optim.schedule=constant", "optim.warmup_steps=6", "train.precision=fp16")
    straight = Trainer(config(token_corpus, tmp_path / "straight", *common, "train.max_steps=7"), process)
    straight_records = straight.fit()
    overflowed = [not math.isfinite(r["grad_norm"]) for r in straight_records]  # DeepSpeed skipped those updates
    assert sum(overflowed[1:]) >= 1, "the scale must still overflow after the resume point"
    Trainer(config(token_corpus, tmp_path / "resumed", *common, "train.max_steps=1"), process).fit()
    resumed = Trainer(config(token_corpus, tmp_path / "resumed", *common, "train.max_steps=7"), process)
    resumed_records = resumed.fit()
    assert [not math.isfinite(r["grad_norm"]) for r in resumed_records] == overflowed[1:]
    assert [r["loss_scale_overflows"] for r in resumed_records] == [
        r["loss_scale_overflows"] for r in straight_records[1:]
    ]
    assert straight_records[-1]["loss_scale_overflows"] == sum(overflowed)
    assert [r["lr"] for r in resumed_records] == [r["lr"] for r in straight_records[1:]]
    assert losses(resumed_records) == losses(straight_records[1:])


def test_activation_checkpointing_recomputes_blocks_and_changes_nothing(
    token_corpus: Path, tmp_path: Path, process: ProcessInfo, monkeypatch
) -> None:
    from pretrain.model.gpt import Block

    calls = {"n": 0}
    forward = Block.forward

    def counted(self, *args, **kwargs):
        calls["n"] += self.training  # training forwards only: evaluation runs in eval mode
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(Block, "forward", counted)
    runs = {}
    for flag in ("false", "true"):
        calls["n"] = 0
        runs[flag] = (
            losses(
                Trainer(
                    config(
                        token_corpus, tmp_path / flag, "train.max_steps=3", f"train.activation_checkpointing={flag}"
                    ),
                    process,
                ).fit()
            ),
            calls["n"],
        )
    assert runs["true"][0] == runs["false"][0]
    assert runs["true"][1] == 2 * runs["false"][1]  # each block's forward runs again in the backward pass


def test_compile_trains_the_same_model(token_corpus: Path, tmp_path: Path, process: ProcessInfo) -> None:
    small = ("model.n_layers=1", "train.max_steps=2")
    eager = Trainer(config(token_corpus, tmp_path / "eager", *small), process)
    compiled = Trainer(config(token_corpus, tmp_path / "compiled", *small, "train.compile=true"), process)
    assert compiled.engine.is_compiled and not eager.engine.is_compiled
    assert losses(compiled.fit()) == pytest.approx(losses(eager.fit()), rel=1e-5)


def test_attention_dropout_is_drawn_and_reproducible(token_corpus: Path, tmp_path: Path, process: ProcessInfo) -> None:
    def run(name: str, rate: float) -> list[float]:
        return losses(
            Trainer(
                config(token_corpus, tmp_path / name, "train.max_steps=3", f"model.attn_dropout={rate}"), process
            ).fit()
        )

    plain, dropped, again = run("plain", 0.0), run("dropped", 0.3), run("again", 0.3)
    assert dropped == again  # seeded
    assert dropped[0] != plain[0]  # the first step already sees the dropout


def test_weight_decay_skips_norms_biases_and_embeddings() -> None:
    model = GPT(ModelConfig(vocab_size=64, n_layers=1, d_model=16, n_heads=2, bias=True))
    decay, no_decay = parameter_groups(model, OptimConfig())
    assert all(p.dim() == 2 for p in decay["params"])
    exempt = {id(p) for p in no_decay["params"]}
    assert id(model.embed.tokens.weight) in exempt and id(model.blocks[0].attn.wq.bias) in exempt
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_lr_schedules() -> None:
    cosine = OptimConfig(warmup_steps=10, min_lr_ratio=0.1)
    assert lr_multiplier(0, cosine, 100) == pytest.approx(0.1)
    assert lr_multiplier(9, cosine, 100) == pytest.approx(1.0)
    assert lr_multiplier(55, cosine, 100) == pytest.approx(0.55)
    assert lr_multiplier(100, cosine, 100) == pytest.approx(0.1)
    wsd = OptimConfig(warmup_steps=10, min_lr_ratio=0.0, schedule=Schedule.wsd, decay_fraction=0.2)
    assert lr_multiplier(79, wsd, 100) == 1.0 and lr_multiplier(90, wsd, 100) == pytest.approx(0.5)
    assert lr_multiplier(50, OptimConfig(warmup_steps=10, schedule=Schedule.constant), 100) == 1.0


def test_command_line_accepts_the_deepspeed_launcher_argument(token_corpus: Path, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "pretrain.train",
        f"data.path={token_corpus}",
        f"run_dir={tmp_path}",
        "train.max_steps=2",
        "train.seq_len=32",
        "train.log_every=1",
        "logging.progress_bar=false",
        "--local_rank=0",
    ]
    # A fresh process, not one of this test process's (whose RANK/MASTER_PORT are taken).
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    }
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    bad = subprocess.run(
        command[:-1] + ["model.n_layer=3"], cwd=REPO, capture_output=True, text=True, timeout=300, env=env
    )
    assert bad.returncode != 0 and "model.n_layer" in bad.stderr


def test_evaluation_tasks_run_during_training(train_text_model, text_shards: Path, tmp_path: Path) -> None:
    from pretrain.checkpoint.consolidate import load_trained_model
    from pretrain.evaluation.run import evaluate_model
    from pretrain.evaluation.tasks import TaskConfig, TaskType
    from pretrain.inference.tokenizer import TextTokenizer

    run = train_text_model(
        tmp_path,
        4,
        "train.eval_every=2",
        f"train.eval_tasks=[{{type: perplexity, path: '{text_shards}', name: held_out}}]",
    )
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evaluated = [line for line in lines if "held_out/ppl" in line]
    assert [line["step"] for line in evaluated] == [2, 4]
    # The last in-training result equals the standalone evaluation of the final checkpoint.
    model, _, _ = load_trained_model(run)
    # Windows of the run's train.seq_len (64), the default of in-training and standalone evaluation alike.
    task = TaskConfig(type=TaskType.perplexity, path=str(text_shards), name="held_out", seq_len=64)
    standalone = evaluate_model(model, TextTokenizer.load(run / "tokenizer"), [task])
    assert evaluated[-1]["held_out/ppl"] == pytest.approx(standalone["held_out/ppl"], rel=1e-5)


def test_evaluation_tasks_refuse_layouts_that_split_the_model(
    token_corpus: Path, tmp_path: Path, process: ProcessInfo
) -> None:
    task = f"train.eval_tasks=[{{type: perplexity, path: '{token_corpus}'}}]"
    with pytest.raises(ValueError, match="train.eval_tasks"):
        Trainer(config(token_corpus, tmp_path, task, "parallel=zero3"), process)
