"""Checkpoints written while training goes on (``train.async_save``).

Each rank copies its part of the training state to host memory and writes its shard file
from that copy in a thread; the next steps run meanwhile. The host memory is allocated at the
first save (pinned for device tensors, so the copies run asynchronously) and reused by every
later one: a run holds one shard of host memory for it from its first save on. When
every rank's thread has written its file, rank 0 marks the checkpoint complete, so a job
killed mid-write leaves a directory without ``complete.json`` that is never resumed from.
At most one checkpoint is in flight: the next save, and the end of training, wait for it.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
from torch import Tensor


class HostBuffers:
    """Host copies of a rank's state tensors, by key, kept from one save to the next."""

    def __init__(self) -> None:
        self._buffers: dict[str, Tensor] = {}

    def copy(self, tensors: list[tuple[str, Tensor]]) -> tuple[list[tuple[str, Tensor]], Callable[[], None]]:
        """The tensors copied into the buffers (made on the first call, or when a shape
        changes), and a wait for the copies. From device tensors the copies are queued on
        the current stream, before the optimizer steps that will change their sources, and
        the wait is on an event recorded after them, not the whole device; the writer thread
        waits before it reads the buffers. From host tensors the copies are done at once."""
        buffers, copies = {}, []
        for key, tensor in tensors:
            buffer = self._buffers.get(key)
            if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
                buffer = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=tensor.is_cuda)
            buffer.copy_(tensor.detach(), non_blocking=tensor.is_cuda)
            buffers[key] = buffer
            copies.append((key, buffer))
        self._buffers = buffers
        if not any(tensor.is_cuda for _, tensor in tensors):
            return copies, lambda: None
        copied = torch.cuda.Event()
        copied.record()
        return copies, copied.synchronize


class BackgroundSaver:
    def __init__(self) -> None:
        # The writer threads meet on a group of their own: the training collectives of the
        # main threads go on meanwhile on the default group.
        self.group: Any = dist.new_group(backend="gloo")
        self.host_buffers = HostBuffers()
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
