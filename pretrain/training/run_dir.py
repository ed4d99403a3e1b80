"""The run directory's checks at start-up: writable, with room for the checkpoints."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from pretrain.checkpoint.directory import checkpoint_root, complete_checkpoints


def check_run_dir(run_dir: Path, bytes_per_checkpoint: int, keep_last: int) -> None:
    """Fail now, not after hours, when checkpoints could not be written (``bytes_per_checkpoint``
    0: the run writes none, so only writability is checked): the newest
    ``keep_last`` are kept, and the next one is written before the oldest goes, so the run
    needs room for ``keep_last + 1`` (less what its checkpoints already take)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-probe-"):  # one per rank: no races
            pass
    except OSError as err:
        raise PermissionError(f"run_dir={run_dir} is not writable ({err.strerror}); choose another run_dir") from None
    existing = sum(
        f.stat().st_size for c in complete_checkpoints(checkpoint_root(run_dir)) for f in c.rglob("*") if f.is_file()
    )
    needed = (max(keep_last, 1) + 1) * bytes_per_checkpoint - existing
    free = shutil.disk_usage(run_dir).free
    if free < needed:
        raise OSError(
            f"run_dir={run_dir}: {free / 2**30:.2f} GiB free, but train.keep_last={keep_last} checkpoints and the one "
            f"being written need about {needed / 2**30:.2f} GiB more; free space or choose another run_dir"
        )
