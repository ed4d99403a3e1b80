"""Every launch path of launch/ run for real, as a user runs it, from a directory outside the
repository: torchrun on one node and as two nodes, the deepspeed launcher with a hostfile,
sbatch on a single-node Slurm (tests/conftest.py), and Hydra sweeps, locally and as Slurm
jobs. Two processes train exactly like one; an interrupted run resumes from its last
complete checkpoint and ends with the losses of an uninterrupted one."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import torch

from pretrain.config import load_train_config
from pretrain.parallel.process_groups import init_distributed
from pretrain.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[3]
LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TINY = ["train.max_steps=2", "train.seq_len=32", "train.log_every=1", "logging.progress_bar=false"]
# The run every launcher repeats. SGD keeps two data-parallel ranks equal to one process over
# many steps (Adam magnifies another reduction order's rounding: ../shared/NOTES-deepspeed-cpu.md).
# Long enough (a few seconds) to be interrupted between its checkpoints.
STEPS, SAVE_EVERY = 100, 10
RUN = [
    "train.seq_len=32",
    "train.micro_batch_size=2",
    "train.global_batch_size=8",
    "optim=sgd",
    "optim.lr=0.1",
    "train.log_every=1",
    "train.eval_every=0",
    "logging.progress_bar=false",
    f"train.save_every={SAVE_EVERY}",
]


def fresh_environment(**extra: str) -> dict[str, str]:
    """The user's environment without this process's rank variables; the checkout's code
    importable from any directory; PYTHON (read by every launch script) is this interpreter."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable, "PYTHONPATH": str(REPO), **extra}


def run(command: list[str], env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def steps_logged(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir: Path) -> list[float]:
    """Loss of each step; where a resumed run logged a step again, its record counts."""
    by_step = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        by_step[record["step"]] = record["loss"]
    assert sorted(by_step) == list(range(1, len(by_step) + 1)), "a step is missing"
    return [by_step[step] for step in sorted(by_step)]


def trained_world_size(run_dir: Path) -> int:
    """How many processes wrote the run's last checkpoint."""
    last = sorted((run_dir / "checkpoints").glob("step-*/complete.json"))[-1]
    return json.loads(last.read_text())["world_size"]


def assert_same_losses(actual: list[float], expected: list[float]) -> None:
    assert len(actual) == len(expected)
    assert actual == pytest.approx(expected, rel=1e-5)


def wait_for_checkpoint(run_dir: Path, step: int, running: Callable[[], bool], timeout: float = 300) -> None:
    """Until the checkpoint of ``step`` is complete (while the run still goes on)."""
    marker = run_dir / "checkpoints" / f"step-{step:08d}" / "complete.json"
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert running() and time.monotonic() < deadline, f"the run stopped or stalled before step {step}"
        time.sleep(0.05)


def resumed_from(output: str) -> list[int]:
    return [int(step) for step in re.findall(r"resumed from \S*step-(\d{8})", output)]


@pytest.fixture(scope="module")
def single_process_losses(token_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> list[float]:
    """The reference: the same run in one process, in this one, on one thread like the launched
    processes (OMP_NUM_THREADS=1): two threads on a busy 2-core machine run ~30x slower."""
    run_dir = tmp_path_factory.mktemp("single-process")
    settings = [
        f"data.path={token_corpus}",
        f"run_dir={run_dir}",
        *RUN,
        f"train.max_steps={STEPS}",
        "train.save_every=0",
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [record["loss"] for record in Trainer(load_train_config(settings), init_distributed()).fit()]
    finally:
        torch.set_num_threads(threads)


def test_deepspeed_launcher_with_the_localhost_hostfile(
    token_corpus: Path, tmp_path: Path, single_process_losses: list[float]
) -> None:
    # As the README shows it, without ssh: the script sees that the hostfile names only
    # this machine. The launcher appends --local_rank=N to every process's arguments.
    env = fresh_environment(MASTER_PORT=str(free_port()))
    run(
        [
            "bash",
            str(REPO / "launch/deepspeed.sh"),
            str(REPO / "launch/hostfile.localhost"),
            f"data.path={token_corpus}",
            "run_dir=run",
            "parallel=zero1",
            *RUN,
            "train.max_steps=10",
        ],
        env,
        cwd=tmp_path,
    )
    assert trained_world_size(tmp_path / "run") == 2  # run_dir relative to the working directory
    assert_same_losses(losses(tmp_path / "run"), single_process_losses[:10])


def test_torchrun_script_single_node(token_corpus: Path, tmp_path: Path) -> None:
    run(
        ["bash", str(REPO / "launch/torchrun.sh"), f"data.path={token_corpus}", "run_dir=run", "parallel=pp2", *TINY],
        fresh_environment(NPROC_PER_NODE="2"),
        cwd=tmp_path,
    )
    assert steps_logged(tmp_path / "run") == [1, 2]


def test_two_node_torchrun_matches_one_process_and_resumes_a_killed_worker(
    token_corpus: Path, tmp_path: Path, single_process_losses: list[float]
) -> None:
    """Two agents on this machine, one process each, meet through a c10d rendezvous on
    127.0.0.1 as two nodes would. A worker of the second node is killed after the first
    checkpoint; with MAX_RESTARTS=1 both nodes restart their workers, which resume."""
    common = dict(
        NNODES="2",
        NPROC_PER_NODE="1",
        MAX_RESTARTS="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        RDZV_ID=tmp_path.name,
    )
    command = [
        "bash",
        str(REPO / "launch/torchrun.sh"),
        f"data.path={token_corpus}",
        "run_dir=run",
        *RUN,
        f"train.max_steps={STEPS}",
    ]
    agents = [
        subprocess.Popen(
            command,
            cwd=tmp_path,
            env=fresh_environment(NODE_RANK=str(rank), **common),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    try:
        wait_for_checkpoint(tmp_path / "run", SAVE_EVERY, lambda: all(agent.poll() is None for agent in agents))
        worker = next(
            child for child in psutil.Process(agents[1].pid).children() if "pretrain.train" in child.cmdline()
        )
        os.kill(worker.pid, signal.SIGKILL)
        outputs = [agent.communicate(timeout=300)[0] for agent in agents]
    finally:
        for agent in agents:
            agent.kill()
    assert [agent.returncode for agent in agents] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    resumed = resumed_from(outputs[0])  # rank 0, on the first node, says it
    assert resumed and resumed[0] % SAVE_EVERY == 0 and SAVE_EVERY <= resumed[0] < STEPS
    assert trained_world_size(tmp_path / "run") == 2
    assert_same_losses(losses(tmp_path / "run"), single_process_losses)


def test_sweep_gives_each_job_its_own_run_dir(token_corpus: Path, tmp_path: Path) -> None:
    run(
        [
            sys.executable,
            "-m",
            "pretrain.train",
            "-m",
            "optim.lr=1e-3,2e-3",
            f"data.path={token_corpus}",
            f"hydra.sweep.dir={tmp_path}",
            *TINY,
        ],
        fresh_environment(),
    )
    for job, lr in (("0", 1e-3), ("1", 2e-3)):
        assert steps_logged(tmp_path / job) == [1, 2]  # two fresh runs: neither resumed the other
        metadata = json.loads((tmp_path / job / "checkpoints" / "step-00000002" / "complete.json").read_text())
        assert metadata["config"]["optim"]["lr"] == lr


# On the single-node Slurm cluster of tests/conftest.py.
SBATCH_ONE_NODE = ["--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1", "--time=10"]


def sbatch_training(slurm, cwd: Path, corpus: Path) -> str:
    """launch/slurm.sbatch with two tasks on the one node; its log is <cwd>/slurm-<job>.out."""
    return slurm.sbatch(
        *SBATCH_ONE_NODE,
        str(REPO / "launch/slurm.sbatch"),
        f"data.path={corpus}",
        "run_dir=run",
        *RUN,
        f"train.max_steps={STEPS}",
        cwd=cwd,
        env=fresh_environment(),
    )


def test_sbatch_two_tasks_match_one_process(
    slurm, token_corpus: Path, tmp_path: Path, single_process_losses: list[float]
) -> None:
    job = sbatch_training(slurm, tmp_path, token_corpus)
    assert slurm.wait(job) == ["COMPLETED"], (tmp_path / f"slurm-{job}.out").read_text()[-3000:]
    assert trained_world_size(tmp_path / "run") == 2
    assert_same_losses(losses(tmp_path / "run"), single_process_losses)


def test_sbatch_cancelled_and_resubmitted_resumes(
    slurm, token_corpus: Path, tmp_path: Path, single_process_losses: list[float]
) -> None:
    first = sbatch_training(slurm, tmp_path, token_corpus)
    wait_for_checkpoint(tmp_path / "run", SAVE_EVERY, lambda: set(slurm.states(first)) <= {"PENDING", "RUNNING"})
    subprocess.run(["scancel", first], check=True)
    assert slurm.wait(first) == ["CANCELLED"]
    second = sbatch_training(slurm, tmp_path, token_corpus)  # the same command, resubmitted
    log = tmp_path / f"slurm-{second}.out"
    assert slurm.wait(second) == ["COMPLETED"], log.read_text()[-3000:]
    resumed = resumed_from(log.read_text())
    assert resumed and resumed[0] % SAVE_EVERY == 0 and SAVE_EVERY <= resumed[0] < STEPS
    assert trained_world_size(tmp_path / "run") == 2
    assert_same_losses(losses(tmp_path / "run"), single_process_losses)


def test_sweep_as_slurm_jobs(slurm, token_corpus: Path, tmp_path: Path) -> None:
    """`-m hydra/launcher=slurm` (submitit): one Slurm job per point, each in its own run dir."""
    launcher = [
        "hydra/launcher=slurm",
        "hydra.launcher.gpus_per_node=0",
        "hydra.launcher.tasks_per_node=1",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=10",
    ]
    run(
        [
            sys.executable,
            "-m",
            "pretrain.train",
            "-m",
            *launcher,
            "optim.lr=1e-3,2e-3",
            f"data.path={token_corpus}",
            f"hydra.sweep.dir={tmp_path}",
            *TINY,
        ],
        fresh_environment(),
        cwd=tmp_path,
    )
    array = next(folder.name for folder in (tmp_path / ".submitit").iterdir() if folder.name.isdigit())
    assert slurm.wait(array) == ["COMPLETED", "COMPLETED"]  # submitit returns on the result, before the job ends
    for job, lr in (("0", 1e-3), ("1", 2e-3)):
        assert steps_logged(tmp_path / job) == [1, 2]
        metadata = json.loads((tmp_path / job / "checkpoints" / "step-00000002" / "complete.json").read_text())
        assert metadata["config"]["optim"]["lr"] == lr


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_step=3", r"^error: .*train\.max_step.*did you mean.*max_steps"),  # caught by Hydra
        ("parallel.tp=3", r"^error: world size 2 is not divisible by parallel\.tp"),  # needs the world size
    ],
)
def test_torchrun_script_config_error_is_one_line(override: str, message: str, tmp_path: Path) -> None:
    """Checked before any worker starts: our one line and exit status 1, no torchrun report."""
    env = fresh_environment(NPROC_PER_NODE="2")
    env.pop("HYDRA_FULL_ERROR", None)
    done = subprocess.run(
        ["bash", str(REPO / "launch/torchrun.sh"), "run_dir=run", override],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1 and re.match(message, done.stderr), done.stderr
