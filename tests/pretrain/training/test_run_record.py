"""A run tells the truth: resume refuses a changed config, sweeps get their own run dirs,
the run's text log, metrics without repeated steps, defaults that fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from pretrain.checkpoint.directory import checkpoint_root
from pretrain.checkpoint.resume_check import CHANGES_FILENAME, check_resume, config_changes
from pretrain.config import TrainConfig, WandbMode, as_plain_dict, load_train_config
from pretrain.parallel.layout import ParallelLayout
from pretrain.parallel.process_groups import ProcessInfo, init_distributed
from pretrain.training.build import resolve_config
from pretrain.training.metrics import wandb_mode
from pretrain.training.run_defaults import fit_micro_batch, silent_gap_warnings
from pretrain.training.trainer import Trainer
from tests.pretrain.conftest import write_corpus

REPO = Path(__file__).resolve().parents[3]
TINY = (
    "train.seq_len=32",
    "train.global_batch_size=4",
    "train.log_every=1",
    "train.eval_every=0",
    "train.save_every=0",
    "train.eval_batches=2",
    "optim.warmup_steps=2",
    "logging.progress_bar=false",
)


@pytest.fixture(scope="module")
def process() -> ProcessInfo:
    return init_distributed()


def tiny_config(corpus: Path, run_dir: Path, *overrides: str) -> TrainConfig:
    return load_train_config([f"data.path={corpus}", f"run_dir={run_dir}", *TINY, *overrides])


# What the recorded run trained on (pretrain.data.sources.data_identity).
DATA = [
    {
        "path": "tokens",
        "weight": 1.0,
        "tokenizer_hash": "a" * 64,
        "shards": 2,
        "num_tokens": 20_000,
        "num_documents": 200,
        "digest": "0123456789abcdef",
    }
]


def recorded(*overrides: str, step: int = 200, tokenizer_hash: str = "a" * 64) -> dict:
    """The complete.json of a checkpoint at ``step`` of a run with these settings."""
    config = load_train_config(["data.path=tokens", *overrides])
    return {
        "step": step,
        "config": as_plain_dict(config),
        "model": as_plain_dict(replace(config.model, vocab_size=256)),
        "tokenizer": {"tokenizer_hash": tokenizer_hash},
        "data": DATA,
    }


@pytest.mark.parametrize(
    "override, setting",
    [
        ("model.d_model=96", "model.d_model"),
        ("objective=mlm", "objective.name"),
        ("optim.lr=0.01", "optim.lr"),
        ("optim.schedule=wsd", "optim.schedule"),
        ("train.global_batch_size=16", "train.global_batch_size"),
        ("train.seq_len=64", "train.seq_len"),
        ("train.seed=7", "train.seed"),
        ("train.max_steps=500", "train.max_steps"),  # cosine: the LRs used so far change
    ],
)
def test_a_meaningful_change_is_named(override: str, setting: str) -> None:
    changes = config_changes(recorded(), load_train_config(["data.path=tokens", override]), "a" * 64, DATA)
    assert setting in [change.setting for change in changes]


def test_free_changes_and_the_tokenizer() -> None:
    free = [
        "train.log_every=3",
        "train.eval_every=7",
        "train.save_every=9",
        "train.keep_last=1",
        "logging.progress_bar=false",
        "train.micro_batch_size=2",
        "parallel=tp2",
        "run_dir=elsewhere",
        "data.tokenizer=moved",
        "data.path=moved",  # the data is compared by what it is (test_data_is_compared_by_what_it_is)
    ]
    assert config_changes(recorded(), load_train_config(["data.path=tokens", *free]), "a" * 64, DATA) == []
    # max_steps is free when the LRs used so far stay the same: a constant schedule, or still in warmup.
    constant = ("optim.schedule=constant",)
    assert (
        config_changes(
            recorded(*constant),
            load_train_config(["data.path=tokens", *constant, "train.max_steps=50"]),
            "a" * 64,
            DATA,
        )
        == []
    )
    assert (
        config_changes(
            recorded(step=50), load_train_config(["data.path=tokens", "train.max_steps=5000"]), "a" * 64, DATA
        )
        == []
    )
    assert config_changes(recorded(), load_train_config(["data.path=tokens", "parallel=3d"]), "a" * 64, DATA) == []
    assert [c.setting for c in config_changes(recorded(), load_train_config(["data.path=tokens"]), "b" * 64, DATA)] == [
        "tokenizer"
    ]


def test_data_is_compared_by_what_it_is() -> None:
    def changes(data: list[dict], *overrides: str) -> list[str]:
        return [
            str(c)
            for c in config_changes(recorded(), load_train_config(["data.path=tokens", *overrides]), "a" * 64, data)
        ]

    moved = [{**DATA[0], "path": "elsewhere/tokens"}]
    assert changes(moved, "data.path=elsewhere/tokens") == []
    other = [{**DATA[0], "path": "other", "num_tokens": 20_001, "digest": "fedcba9876543210"}]
    assert changes(other, "data.path=other") == [
        "data: tokens (weight 1.0, 20000 tokens, 2 shards, digest 0123456789abcdef) -> "
        "other (weight 1.0, 20001 tokens, 2 shards, digest fedcba9876543210)"
    ]
    blend = [{**DATA[0], "weight": 2.0}, {**DATA[0], "path": "more"}]
    assert [c.split(":")[0] for c in changes(blend)] == ["data"]


def test_force_takes_a_new_dropout_but_not_a_new_shape(tmp_path: Path) -> None:
    checkpoint = tmp_path / "step-00000200"
    checkpoint.mkdir()
    (checkpoint / "complete.json").write_text(json.dumps(recorded()))

    def forced(*overrides: str) -> list[str]:
        cfg = load_train_config(["data.path=tokens", "resume=force", *overrides])
        return [
            c.setting
            for c in check_resume(checkpoint, cfg, replace(cfg.model, vocab_size=256), "a" * 64, DATA, force=True)
        ]

    assert forced("model.residual_dropout=0.1") == ["model.residual_dropout"]
    with pytest.raises(ValueError, match=r"parameters differ in shape \(.*model.d_model: 64 -> 96"):
        forced("model.d_model=96")


def test_resume_refuses_a_change_force_continues_and_the_log_tells(
    token_corpus: Path, tmp_path: Path, process: ProcessInfo
) -> None:
    Trainer(tiny_config(token_corpus, tmp_path, "train.max_steps=2"), process).fit()
    with pytest.raises(ValueError, match=r"optim.lr: 0.0003 -> 0.01.*resume=force"):
        Trainer(tiny_config(token_corpus, tmp_path, "train.max_steps=3", "optim.lr=1e-2"), process)
    forced = Trainer(tiny_config(token_corpus, tmp_path, "train.max_steps=3", "optim.lr=1e-2", "resume=force"), process)
    assert forced.step == 2
    assert [r["step"] for r in forced.fit()] == [3]
    change = json.loads((tmp_path / CHANGES_FILENAME).read_text())
    assert change["step"] == 2 and change["changes"] == [{"setting": "optim.lr", "old": 3e-4, "new": 1e-2}]
    # The checkpoint now records the new settings: resuming with them needs no force; a free
    # setting (log cadence) changes silently.
    again = Trainer(
        tiny_config(token_corpus, tmp_path, "train.max_steps=3", "optim.lr=1e-2", "train.log_every=5"), process
    )
    assert again.step == 3
    log = (tmp_path / "train.log").read_text()
    assert "model tiny:" in log and "layout tp 1 × pp 1 × dp 1 = 1 processes, ZeRO 0" in log
    assert "resumed from" in log and "resume=force: continuing with a changed optim.lr: 0.0003 -> 0.01" in log
    assert "micro_batch_size not set: chose 4" in log
    assert log.count("resume=force") == 1  # the free change said nothing


def test_metrics_hold_each_step_once_after_a_kill_and_restart(
    token_corpus: Path, tmp_path: Path, process: ProcessInfo
) -> None:
    Trainer(tiny_config(token_corpus, tmp_path, "train.max_steps=4", "train.save_every=2"), process).fit()
    # As if killed after logging step 4 but before its checkpoint was complete.
    (checkpoint_root(tmp_path) / "step-00000004" / "complete.json").unlink()
    resumed = Trainer(tiny_config(token_corpus, tmp_path, "train.max_steps=5", "train.save_every=2"), process)
    assert resumed.step == 2
    resumed.fit()
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    final = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert "val_loss" in final  # every run ends with an evaluation, eval_every=0 or not


def test_a_moved_corpus_resumes_another_one_is_refused(tmp_path: Path, process: ProcessInfo) -> None:
    corpus = write_corpus(tmp_path / "tokens", train_shards=1, docs_per_shard=60)
    run_dir = tmp_path / "run"
    Trainer(tiny_config(corpus, run_dir, "train.max_steps=1"), process).fit()
    moved = corpus.rename(tmp_path / "moved")
    assert Trainer(tiny_config(moved, run_dir, "train.max_steps=2"), process).step == 1  # no resume=force
    other = write_corpus(tmp_path / "other", train_shards=1, docs_per_shard=60, seed=1)
    with pytest.raises(ValueError, match=rf"data: {corpus} \(weight 1.0, \d+ tokens.* -> {other} \(") as refused:
        Trainer(tiny_config(other, run_dir, "train.max_steps=2"), process)
    assert "resume=force" in str(refused.value)


def fresh_environment() -> dict[str, str]:
    """Without this test process's launcher variables (its RANK and MASTER_PORT are taken)."""
    launched = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    return {k: v for k, v in os.environ.items() if k not in launched} | {
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
    }


def test_a_sweep_with_an_explicit_run_dir_gives_each_job_its_own(token_corpus: Path, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "pretrain.train",
        "-m",
        "optim.lr=1e-3,2e-3",
        f"data.path={token_corpus}",
        f"run_dir={tmp_path / 'sweep'}",
        f"hydra.sweep.dir={tmp_path / 'hydra'}",
        "train.max_steps=2",
        *TINY,
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=fresh_environment())
    assert done.returncode == 0, done.stderr[-3000:]
    for job, lr in (("0", 1e-3), ("1", 2e-3)):
        run_dir = tmp_path / "sweep" / job
        assert [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2]
        metadata = json.loads((checkpoint_root(run_dir) / "step-00000002" / "complete.json").read_text())
        assert metadata["config"]["optim"]["lr"] == lr


def test_defaults_fit_the_model_and_the_data_parallel_size() -> None:
    cfg = load_train_config(["model.max_seq_len=96"])
    assert cfg.train.seq_len == 96
    for world_size, global_batch, micro in ((1, 8, 8), (2, 8, 4), (4, 8, 2), (3, 6, 2), (1, 12, 4)):
        chosen, note = fit_micro_batch(load_train_config([f"train.global_batch_size={global_batch}"]), world_size)
        assert chosen.train.micro_batch_size == micro and f"chose {micro}" in note
    given, note = fit_micro_batch(load_train_config(["train.micro_batch_size=2"]), 2)
    assert given.train.micro_batch_size == 2 and note is None


def test_a_config_resolved_by_the_entry_point_is_built_for_its_world_size(tmp_path: Path, process) -> None:
    """``pretrain.train`` resolves once, before any process group, and hands the result on."""
    resolved = resolve_config(load_train_config(["train.global_batch_size=8", f"run_dir={tmp_path}"]), world_size=2)
    assert resolved.cfg.train.micro_batch_size == 4 and "chose 4" in resolved.micro_batch_note
    assert resolved.layout == ParallelLayout(tp=1, pp=1, dp=2)
    with pytest.raises(ValueError, match="resolved for 2 processes, but 1 were launched"):
        Trainer(resolved, process)


def test_silent_gaps_are_warned_about() -> None:
    cfg = load_train_config(["train.max_steps=50", "optim.warmup_steps=100", "train.seq_len=64"])
    warnings = silent_gap_warnings(cfg, validation_windows=0, has_validation=False, per_round=8)
    assert "optim.warmup_steps=100 exceeds train.max_steps=50" in warnings[0] and "no 'val' shards" in warnings[1]
    small = silent_gap_warnings(cfg, validation_windows=3, has_validation=True, per_round=8)
    assert "holds 3 windows of train.seq_len=64 tokens, fewer than one evaluation batch (8)" in small[1]
    assert silent_gap_warnings(load_train_config(), validation_windows=8, has_validation=True, per_round=8) == []


def test_wandb_mode_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode(WandbMode.disabled) is WandbMode.offline
    assert wandb_mode(WandbMode.online) is WandbMode.online  # the config, when set, wins
    monkeypatch.delenv("WANDB_MODE")
    assert wandb_mode(WandbMode.disabled) is WandbMode.disabled
