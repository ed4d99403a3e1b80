"""A finished Trainer goes away when its last reference does (no reference cycle through it),
and a run can write no checkpoint at all (``train.save_at_end=false``), which also spares it
the free-disk check: what benchmarks/gpu.sh relies on."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest

import pretrain.training.run_dir as run_dir_module
from pretrain.checkpoint.directory import checkpoint_root, complete_checkpoints
from pretrain.config import TrainConfig, load_train_config
from pretrain.parallel.process_groups import ProcessInfo, init_distributed
from pretrain.training.trainer import Trainer


@pytest.fixture(scope="module")
def process() -> ProcessInfo:
    return init_distributed()


def config(corpus: Path, run_dir: Path, *overrides: str) -> TrainConfig:
    return load_train_config(
        [
            f"data.path={corpus}",
            f"run_dir={run_dir}",
            "train.seq_len=32",
            "train.micro_batch_size=4",
            "train.global_batch_size=8",
            "train.max_steps=3",
            "train.log_every=1",
            "train.eval_every=0",
            "logging.progress_bar=false",
            "optim.warmup_steps=0",
            *overrides,
        ]
    )


def test_a_trained_trainer_is_freed_by_del_alone(token_corpus: Path, tmp_path: Path, process: ProcessInfo) -> None:
    # The first model built in a process imports torch._dynamo lazily, and torch.fx.wrap
    # (torch 2.13) keeps its caller's frames in a cycle of its own: import it first.
    import torch._dynamo  # noqa: F401

    trainer = Trainer(config(token_corpus, tmp_path, "train.save_every=2", "parallel.zero_stage=1"), process)
    trainer.fit()
    released = weakref.ref(trainer)
    gc.disable()  # no collection may run between the del and the check
    try:
        del trainer
        assert released() is None, [type(r).__name__ for r in gc.get_referrers(released())]
    finally:
        gc.enable()


def test_save_at_end_false_writes_no_checkpoint_and_needs_no_disk_room(
    token_corpus: Path, tmp_path: Path, process: ProcessInfo, monkeypatch
) -> None:
    full = SimpleNamespace(total=10**9, used=10**9 - 1000, free=1000)
    monkeypatch.setattr(run_dir_module.shutil, "disk_usage", lambda path: full)
    with pytest.raises(OSError, match="free space"):  # a run that saves at the end needs room
        Trainer(config(token_corpus, tmp_path / "saves", "train.save_every=0"), process)
    records = Trainer(
        config(token_corpus, tmp_path / "none", "train.save_every=0", "train.save_at_end=false"), process
    ).fit()
    assert [r["step"] for r in records] == [1, 2, 3]
    assert complete_checkpoints(checkpoint_root(tmp_path / "none")) == []
    monkeypatch.undo()
    Trainer(config(token_corpus, tmp_path / "periodic", "train.save_every=2", "train.save_at_end=false"), process).fit()
    assert [c.name for c in complete_checkpoints(checkpoint_root(tmp_path / "periodic"))] == ["step-00000002"]
