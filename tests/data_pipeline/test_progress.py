"""Progress bars only on a terminal: to a pipe or a log file no bar is drawn (tqdm's carriage
returns would fill it), on a terminal it is; and every bar of the project goes through the
one helper that decides so."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import termios
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# A bar of 50 updates, as the executors, evaluation and generation draw one.
SCRIPT = "from data_pipeline.progress import progress_bar\nfor _ in progress_bar(range(50), desc='units'): pass\n"


def stderr_of(script: str, *, terminal: bool) -> bytes:
    """What ``script`` wrote to its stderr, given a pipe or (``terminal``) a pseudo-terminal."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if not terminal:
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stderr
    leader, follower = os.openpty()
    # 24 rows of 80 columns: a new pseudo-terminal has 0 columns, where tqdm draws nothing.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    done = subprocess.run([sys.executable, "-c", script], env=env, stderr=follower, timeout=60)
    os.close(follower)
    assert done.returncode == 0
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal's other end is closed and everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return b"".join(chunks)


def test_a_pipe_gets_no_bar_a_terminal_does() -> None:
    assert stderr_of(SCRIPT, terminal=False) == b""
    drawn = stderr_of(SCRIPT, terminal=True)
    assert b"\r" in drawn and b"units" in drawn and b"50/50" in drawn


def test_every_progress_bar_goes_through_the_helper() -> None:
    """Only data_pipeline/progress.py imports tqdm: a bar made elsewhere would draw into logs."""
    sources = [*REPO.glob("pretrain/**/*.py"), *REPO.glob("data_pipeline/**/*.py"), *REPO.glob("benchmarks/**/*.py")]
    importers = [
        str(path.relative_to(REPO))
        for path in sources
        if any(line.lstrip().startswith(("from tqdm", "import tqdm")) for line in path.read_text().splitlines())
    ]
    assert importers == ["data_pipeline/progress.py"]
