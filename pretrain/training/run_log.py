"""``<run_dir>/train.log``: a text copy of what the console shows (rank 0), plus the errors
of every rank, so that resume notices, parameter counts and failures outlive the terminal."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, TextIO

from data_pipeline.cli_errors import send_errors_to

LOG_FILENAME = "train.log"
# Where errors of this process go (set once the run directory is known, on every rank).
_error_log: Optional[Path] = None


def log_errors_to(run_dir: Path) -> None:
    """From now on, the one-line errors of this process are appended to this run's log."""
    global _error_log
    _error_log = run_dir / LOG_FILENAME
    send_errors_to(append_error)


def _stamped(text: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return "".join(f"{stamp} {line}\n" for line in text.splitlines() or [""])


class RunLog:
    """Rank 0 writes the lines; every rank may append its errors (see :func:`append_error`)."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self._file: Optional[TextIO] = open(run_dir / LOG_FILENAME, "a", buffering=1) if enabled else None

    def write(self, text: str) -> None:
        if self._file is not None:
            self._file.write(_stamped(text))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def append_error(text: str) -> None:
    """One short append (atomic enough between ranks with O_APPEND); no-op before a run exists."""
    if _error_log is None:
        return
    try:
        with open(_error_log, "a") as stream:
            stream.write(_stamped(text))
    except OSError:
        pass  # the console has the error; a log that cannot be written must not hide it
