"""Runs one row's process (benchmarks/gpu/row_process.py) with a time limit: its output goes
to a log file (not into this process's memory), its answer is the ``RESULT`` line, and
whatever goes wrong (an error, a crash, the time limit) comes back as one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROW_PROCESS = Path(__file__).resolve().parent / "row_process.py"
REPO = ROW_PROCESS.parents[2]
# A row is one process of its own, not a rank of whatever launched the benchmark.
LAUNCH_ENV = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RESTART_COUNT",
)


def exit_on_sigterm() -> None:
    """gpu.sh's ``timeout`` stops the benchmark with SIGTERM: exit through ``run_row_process``'s
    cleanup, which ends the running row's process group, rather than leave it on the device."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def row_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def last_result(log: Path) -> dict | None:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("RESULT ")]
    return json.loads(lines[-1][len("RESULT ") :]) if lines else None


def last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def run_row_process(spec: dict, corpus: Path, run_dir: Path, log: Path, timeout_s: float) -> dict:
    """``{"tokens_per_s", "peak_gib"}`` or ``{"error": one line}``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(ROW_PROCESS), json.dumps(spec), str(corpus), str(run_dir)]
    with log.open("w") as out:
        # A session of its own: on the time limit the whole group goes (compile workers too).
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=row_environment(), cwd=REPO, start_new_session=True
        )
        try:
            returncode = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout_s:g} s (log: {log})"}
        finally:  # also when this process is told to stop (gpu.sh's time limit): no row outlives it
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    result = last_result(log)
    if result is None:  # killed (out of host memory, a signal) before it could answer
        return {"error": f"exit code {returncode}: {last_line(log)} (log: {log})"}
    return result
