"""Checkpoints written while training goes on (``train.async_save``).

Each rank copies its part of the training state to host memory (pinned for device tensors)
and writes its shard file from that copy in a thread; the next steps run meanwhile. When
every rank's thread has written its file, rank 0 marks the checkpoint complete, so a job
killed mid-write leaves a directory without ``complete.json`` that is never resumed from.
At most one checkpoint is in flight: the next save, and the end of training, wait for it.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional

import torch.distributed as dist


class BackgroundSaver:
    def __init__(self) -> None:
        # The writer threads meet on a group of their own: the training collectives of the
        # main threads go on meanwhile on the default group.
        self.group: Any = dist.new_group(backend="gloo")
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None

    def start(self, finish: Callable[[], None], name: str) -> None:
        """Run ``finish`` (write this rank's files, then meet the other ranks on ``group``)
        in a thread; call ``wait`` first."""
        assert self._thread is None, "one checkpoint in flight at a time"
        self._thread = threading.Thread(target=self._run, args=(finish,), name=name, daemon=True)
        self._thread.start()

    def _run(self, finish: Callable[[], None]) -> None:
        try:
            finish()
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
