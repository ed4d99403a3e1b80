"""``train.async_save``: checkpoints written in the background are the same as those written
in step, and one cut off while it is written is never complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import pretrain.checkpoint.sharded as sharded_checkpoint
from pretrain.checkpoint.background_save import HostBuffers
from pretrain.checkpoint.directory import COMPLETE_MARKER, checkpoint_root, latest_complete, tag_for
from pretrain.parallel.process_groups import ProcessInfo, init_distributed
from pretrain.training.trainer import Trainer
from tests.pretrain.training.test_train import REPO, config, losses

SAVES = ["train.max_steps=4", "train.save_every=2", "train.keep_last=2"]


@pytest.fixture(scope="module")
def process() -> ProcessInfo:
    return init_distributed()


def shard_bytes(run_dir: Path, step: int) -> dict[str, bytes]:
    directory = checkpoint_root(run_dir) / tag_for(step) / sharded_checkpoint.DIRECTORY
    return {f.name: f.read_bytes() for f in sorted(directory.iterdir())}


def test_a_background_checkpoint_equals_one_written_in_step(
    token_corpus: Path, tmp_path: Path, process: ProcessInfo, monkeypatch
) -> None:
    in_step = losses(Trainer(config(token_corpus, tmp_path / "sync", *SAVES), process).fit())
    background = Trainer(config(token_corpus, tmp_path / "async", *SAVES, "train.async_save=true"), process)
    # Step 2's file is written only after step 3 has updated the live state: it must come
    # from the copy taken at step 2.
    stepped_on = threading.Event()
    train_step, write_shard = Trainer.train_step, sharded_checkpoint.write_shard

    def step_then_signal(self: Trainer, *args, **kwargs):
        result = train_step(self, *args, **kwargs)
        if self.step == 3:
            stepped_on.set()
        return result

    def write_after_step_3(path: Path, *args) -> None:
        if path.name == tag_for(2):
            assert stepped_on.wait(120)
            assert not (path / COMPLETE_MARKER).exists()
        write_shard(path, *args)

    # Every save copies into the same host buffers, allocated at the first.
    buffers_per_save: list[list[int]] = []
    copy = HostBuffers.copy

    def copy_and_record(self: HostBuffers, tensors):  # type: ignore[no-untyped-def]
        copies, wait = copy(self, tensors)
        buffers_per_save.append([tensor.data_ptr() for _, tensor in copies])
        return copies, wait

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    monkeypatch.setattr(sharded_checkpoint, "write_shard", write_after_step_3)
    monkeypatch.setattr(HostBuffers, "copy", copy_and_record)
    assert losses(background.fit()) == in_step
    assert stepped_on.is_set()
    assert len(buffers_per_save) == 2 and buffers_per_save[0] == buffers_per_save[1]
    for step in (2, 4):
        assert shard_bytes(tmp_path / "async", step) == shard_bytes(tmp_path / "sync", step)
    monkeypatch.undo()
    resumed = Trainer(
        config(
            token_corpus, tmp_path / "resumed", *SAVES, f"resume={checkpoint_root(tmp_path / 'async') / tag_for(2)}"
        ),
        process,
    )
    assert resumed.step == 2
    assert losses(resumed.fit()) == in_step[2:]


def test_a_kill_during_the_background_write_leaves_no_complete_checkpoint(token_corpus: Path, tmp_path: Path) -> None:
    """The worker's shard writes hang; training goes on to step 2 meanwhile, then it is killed."""
    overrides = [
        f"data.path={token_corpus}",
        f"run_dir={tmp_path}",
        "train.seq_len=32",
        "train.log_every=1",
        "train.eval_every=0",
        "train.max_steps=3",
        "train.save_every=1",
        "train.async_save=true",
        "logging.progress_bar=false",
    ]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    }
    env["PYTHONPATH"] = str(REPO)
    worker = subprocess.Popen(
        [sys.executable, str(REPO / "tests/pretrain/workers/async_save_worker.py"), *overrides],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = tmp_path / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 240
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
            assert worker.poll() is None, worker.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "step 2 did not run while step 1's checkpoint was being written"
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    cut_off = checkpoint_root(tmp_path) / tag_for(1)
    assert (cut_off / sharded_checkpoint.DIRECTORY / sharded_checkpoint.shard_file(0)).stat().st_size > 0
    assert not (cut_off / COMPLETE_MARKER).exists()
    assert latest_complete(checkpoint_root(tmp_path)) is None
