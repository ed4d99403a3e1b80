"""The launchers of launch/ and Hydra sweeps, as a user runs them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TINY = ["train.max_steps=2", "train.seq_len=32", "train.log_every=1", "logging.progress_bar=false"]


def fresh_environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable, **extra}


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def steps_logged(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_deepspeed_launcher_with_a_hostfile(token_corpus: Path, tmp_path: Path) -> None:
    # The launcher appends --local_rank=N to every process's arguments.
    deepspeed = Path(sys.executable).with_name("deepspeed")
    env = fresh_environment(
        DEEPSPEED=str(deepspeed), MASTER_PORT="29731",
        DEEPSPEED_ARGS="--num_nodes 1 --no_ssh --node_rank 0 --master_addr 127.0.0.1",
    )
    run(["bash", "launch/deepspeed.sh", "launch/hostfile.localhost", f"data.path={token_corpus}",
         f"run_dir={tmp_path}", "parallel=tp2", *TINY], env)
    assert steps_logged(tmp_path) == [1, 2]


def test_torchrun_script_single_node(token_corpus: Path, tmp_path: Path) -> None:
    run(["bash", "launch/torchrun.sh", f"data.path={token_corpus}", f"run_dir={tmp_path}", "parallel=pp2", *TINY],
        fresh_environment(NPROC_PER_NODE="2"))
    assert steps_logged(tmp_path) == [1, 2]


def test_sweep_gives_each_job_its_own_run_dir(token_corpus: Path, tmp_path: Path) -> None:
    run([sys.executable, "-m", "pretrain.train", "-m", "optim.lr=1e-3,2e-3", f"data.path={token_corpus}",
         f"hydra.sweep.dir={tmp_path}", *TINY], fresh_environment())
    for job, lr in (("0", 1e-3), ("1", 2e-3)):
        assert steps_logged(tmp_path / job) == [1, 2]  # two fresh runs: neither resumed the other
        metadata = json.loads((tmp_path / job / "checkpoints" / "step-00000002" / "complete.json").read_text())
        assert metadata["config"]["optim"]["lr"] == lr
