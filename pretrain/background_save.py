"""Checkpoints written while training goes on (``train.async_save``).

Each rank copies its part of the training state to host memory (pinned for device tensors)
and writes its shard file from that copy in a thread; the next steps run meanwhile. When
every rank's thread has written its file, rank 0 marks the checkpoint complete, so a job
killed mid-write leaves a directory without ``complete.json`` that is never resumed from.
At most one checkpoint is in flight: the next save, and the end of training, wait for it.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Optional

import torch.distributed as dist

from pretrain.checkpoint import mark_complete, start_checkpoint


class BackgroundSaver:
    def __init__(self) -> None:
        # The writer threads meet on a group of their own: the training collectives of the
        # main threads go on meanwhile on the default group.
        self.group = dist.new_group(backend="gloo")
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None

    def save(
        self,
        run_dir: str | Path,
        step: int,
        metadata: dict[str, Any],
        keep_last: int,
        prepare_state: Callable[[Path], Callable[[], None]],
    ) -> Path:
        """Collective: start the checkpoint of ``step``; ``prepare_state(path)`` copies this
        rank's state and returns the write of its file, which runs in the background."""
        self.wait()
        path = start_checkpoint(run_dir, step)
        write = prepare_state(path)
        self._thread = threading.Thread(
            target=self._finish, args=(write, path, step, metadata, keep_last), name=f"checkpoint-{step}", daemon=True
        )
        self._thread.start()
        return path

    def _finish(self, write: Callable[[], None], path: Path, step: int, metadata: dict[str, Any], keep_last: int) -> None:
        try:
            write()
            mark_complete(path, step, metadata, keep_last, self.group)
        except BaseException as error:  # raised again in the main thread by wait()
            self._error = error

    def wait(self) -> None:
        """Block until the checkpoint in flight, if any, is written and marked complete."""
        if self._thread is None:
            return
        self._thread.join()
        self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
