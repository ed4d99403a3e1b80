"""Fixtures for every test folder: CUDA hidden from the CPU suite, and a single-node Slurm cluster
(munge, slurmctld, slurmd) for the tests of the Slurm launch paths, configured and run entirely
inside a temporary directory."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

GPU_LANE = Path(__file__).resolve().parent / "gpu"


def runs_only_the_gpu_lane(args: list[str]) -> bool:
    """Whether pytest was asked for tests under tests/gpu/ and nothing else."""
    paths = [Path(arg.split("::")[0]).resolve() for arg in args if not arg.startswith("-")]
    return bool(paths) and all(path == GPU_LANE or GPU_LANE in path.parents for path in paths)


def pytest_configure(config: pytest.Config) -> None:
    """The CPU suite gives the same results on a GPU machine: it hides CUDA (else it would
    switch to CUDA, NCCL and bf16, and its multi-rank tests would ask one GPU for devices
    1..3). CUDA_VISIBLE_DEVICES="" is set before any test imports code that initializes CUDA
    (torch reads it then), and every subprocess, torchrun and srun the tests start inherits it.
    The GPU lane (``pytest tests/gpu``, asked for alone) keeps CUDA; run with the rest of
    the suite, its tests see no CUDA and skip."""
    if not runs_only_the_gpu_lane(config.args):
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


@pytest.fixture(autouse=True)
def original_functional_linear() -> Iterator[None]:
    """An in-process ZeRO-3 run leaves ``torch.nn.functional.linear`` replaced by DeepSpeed's
    ``zero3_linear_wrap`` (its memory-efficient linear "persists unless manually reset"),
    which changes what later tests in the same process compute (e.g. under autocast)."""
    import torch.nn.functional as F

    linear = F.linear
    yield
    F.linear = linear


SLURM_PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scancel", "squeue", "scontrol", "sinfo")
HOW_TO_ENABLE = "run the tests as root after Debian's `apt-get install slurm-wlm munge` (as .ci/run does)"
FINISHED_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
}
# The node offers more CPUs than a 2-core CI machine has, so that a two-task job and a
# 3-task array run side by side (slurmd accepts this with SlurmdParameters=config_overrides).
NODE_CPUS = 4
SEARCH_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"  # the daemons live in sbin, off a user's PATH


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _program(name: str) -> str | None:
    return shutil.which(name, path=SEARCH_PATH)


def _why_slurm_cannot_run() -> str | None:
    if os.geteuid() != 0:
        return "the Slurm tests start their own cluster and need root"
    missing = [program for program in SLURM_PROGRAMS if _program(program) is None]
    return f"{', '.join(missing)} not installed" if missing else None


def _slurm_conf(root: Path, host: str) -> str:
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return f"""\
ClusterName=pytest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
SchedulerParameters=sched_interval=1
MinJobAge=600
KillWait=5
NodeName={host} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    """A running single-node cluster; its client commands find it through SLURM_CONF."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "slurm.conf"
        self.daemons: list[subprocess.Popen] = []
        # The stand-in sacct first (tests/sacct_from_scontrol.py says why).
        self.path = f"{root / 'bin'}:{os.environ.get('PATH', '')}"

    def start(self) -> None:
        (self.root / "state").mkdir()
        (self.root / "spool").mkdir()
        self.conf.write_text(_slurm_conf(self.root, socket.gethostname().split(".")[0]))
        self._write_sacct_stand_in()
        munge = self.root / "munge"
        munge.mkdir(mode=0o700)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)  # munged refuses a key that others can read
        self._daemon(
            "munged",
            "--foreground",
            "--force",
            f"--key-file={key}",
            f"--socket={munge}/socket",
            f"--pid-file={munge}/munged.pid",
            f"--seed-file={munge}/seed",
            f"--log-file={munge}/munged.log",
        )
        self._wait_until(lambda: (munge / "socket").exists(), "munged did not create its socket")
        self._daemon("slurmctld", "-D", "-i", "-f", str(self.conf))
        self._daemon("slurmd", "-D", "-f", str(self.conf))
        self._wait_until(self._node_is_idle, "the Slurm node did not come up")

    def _write_sacct_stand_in(self) -> None:
        sacct = self.root / "bin" / "sacct"
        sacct.parent.mkdir()
        script = Path(__file__).with_name("sacct_from_scontrol.py")
        sacct.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
        sacct.chmod(0o755)

    def stop(self) -> None:
        """Cancel every job (so no job step outlives the cluster), then stop the daemons."""
        if self.daemons and self.daemons[-1].poll() is None:
            subprocess.run(["scancel", "--partition=debug"], env=self.env(), capture_output=True)
            self._wait_until(lambda: not self.queue(), "jobs still running after scancel", fail=False)
        for daemon in reversed(self.daemons):
            daemon.terminate()
        for daemon in reversed(self.daemons):
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": self.path, **extra}

    def sbatch(self, *args: str, cwd: Path, env: dict[str, str]) -> str:
        """Submit; the job id."""
        done = subprocess.run(["sbatch", "--parsable", *args], cwd=cwd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().split(";")[0]

    def queue(self) -> list[str]:
        done = subprocess.run(["squeue", "--noheader", "--format=%i"], env=self.env(), capture_output=True, text=True)
        return done.stdout.split()

    def states(self, job_id: str) -> list[str]:
        """The state of each task of a job (one for a plain job, one per element of an array)."""
        done = subprocess.run(
            ["scontrol", "--oneliner", "show", "job", job_id],
            env=self.env(),
            capture_output=True,
            text=True,
            check=True,
        )
        return [field.split("=", 1)[1] for field in done.stdout.split() if field.startswith("JobState=")]

    def wait(self, job_id: str, timeout: float = 240) -> list[str]:
        """Wait for every task of a job to finish; their final states."""
        self._wait_until(
            lambda: set(self.states(job_id)) <= FINISHED_STATES, f"job {job_id} still running", timeout=timeout
        )
        return self.states(job_id)

    def wait_until_idle(self, timeout: float = 240) -> None:
        self._wait_until(lambda: not self.queue(), f"jobs still queued: {self.queue()}", timeout=timeout)

    def log_tail(self) -> str:
        """The end of each daemon's log, for a failure message."""
        logs = sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.out"))
        return "\n".join(f"--- {log.name}\n" + log.read_text()[-1500:] for log in logs)

    def _daemon(self, *command: str) -> None:
        with open(self.root / f"{command[0]}.out", "w") as log:
            self.daemons.append(
                subprocess.Popen(
                    [_program(command[0]), *command[1:]], stdout=log, stderr=subprocess.STDOUT, env=self.env()
                )
            )

    def _node_is_idle(self) -> bool:
        done = subprocess.run(["sinfo", "--noheader", "--format=%T"], env=self.env(), capture_output=True, text=True)
        return done.stdout.strip() == "idle"

    def _wait_until(self, condition, message: str, timeout: float = 60, fail: bool = True) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if any(daemon.poll() is not None for daemon in self.daemons) or time.monotonic() > deadline:
                if fail:
                    pytest.fail(f"{message}\n{self.log_tail()}")
                return
            time.sleep(0.2)


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A single-node Slurm cluster for the session, stopped at the end even when tests fail.
    Skipped (with how to enable it) where it cannot run, except in CI, where that fails."""
    reason = _why_slurm_cannot_run()
    if reason and os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI must run the Slurm tests, but {reason}: {HOW_TO_ENABLE}")
    if reason:
        pytest.skip(f"{reason}: {HOW_TO_ENABLE}")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SLURM_CONF", str(cluster.conf))
            patch.setenv("PATH", cluster.path)
            yield cluster
    finally:
        cluster.stop()
