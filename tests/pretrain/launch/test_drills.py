"""Reliability drills: a worker killed mid-training under torchrun's restart policy resumes
from the last complete checkpoint and, in the end, has trained on exactly the samples of an
uninterrupted run: no gap, no repeat."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pretrain.config import load_train_config
from pretrain.parallel.process_groups import ProcessInfo, init_distributed
from pretrain.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[3]
LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
STEPS = 120


def settings(corpus: Path, run_dir: Path) -> list[str]:
    return [
        f"data.path={corpus}",
        f"run_dir={run_dir}",
        "train.seq_len=32",
        "train.micro_batch_size=2",
        "train.global_batch_size=8",
        f"train.max_steps={STEPS}",
        "train.save_every=20",
        "train.log_every=10",
        "train.eval_every=0",
        "train.sample_log=true",
        "logging.progress_bar=false",
    ]


def trained_samples(run_dir: Path) -> dict[int, list[tuple[int, int]]]:
    """Step -> the global batch's (source, window) pairs, from every data-parallel rank's log.
    A resumed run drops the records after its checkpoint, so each step is logged once."""
    by_step: dict[int, list[tuple[int, int]]] = {}
    for log in sorted((run_dir / "samples").glob("dp-rank-*.jsonl")):
        steps = [json.loads(line) for line in log.read_text().splitlines()]
        assert len({record["step"] for record in steps}) == len(steps), f"{log.name} logs a step twice"
        for record in steps:
            by_step.setdefault(record["step"], []).extend(tuple(pair) for pair in record["samples"])
    return {step: sorted(pairs) for step, pairs in by_step.items()}


def logged_steps(run_dir: Path) -> int:
    logs = list((run_dir / "samples").glob("dp-rank-*.jsonl")) if (run_dir / "samples").exists() else []
    return max((json.loads(line)["step"] for log in logs for line in log.read_text().splitlines() if line), default=0)


@pytest.fixture(scope="module")
def process() -> ProcessInfo:
    return init_distributed()


def test_killed_worker_restarts_and_trains_on_exactly_the_same_samples(
    token_corpus: Path, tmp_path: Path, process: ProcessInfo
) -> None:
    reference_dir = tmp_path / "uninterrupted"
    Trainer(load_train_config(settings(token_corpus, reference_dir)), process).fit()
    reference = trained_samples(reference_dir)

    run_dir = tmp_path / "killed"
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "--max-restarts=1",
        "-m",
        "pretrain.train",
        *settings(token_corpus, run_dir),
    ]
    launcher = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while logged_steps(run_dir) < 30 and launcher.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    workers = psutil.Process(launcher.pid).children()
    assert workers and logged_steps(run_dir) < STEPS, "the run ended before it could be interrupted"
    killed_at = logged_steps(run_dir)
    os.kill(workers[-1].pid, signal.SIGKILL)
    output, _ = launcher.communicate(timeout=600)
    (tmp_path / "launcher.log").write_text(output)
    assert launcher.returncode == 0, output[-3000:]
    resumed = [int(step) for step in re.findall(r"resumed from \S*step-(\d{8}) at step", output)]
    assert resumed and resumed[0] % 20 == 0 and 0 < resumed[0] <= killed_at  # the last complete checkpoint

    trained = trained_samples(run_dir)
    assert sorted(trained) == list(range(1, STEPS + 1))  # no step missing
    assert trained == reference  # every step on the same samples: no gap, no repeat
