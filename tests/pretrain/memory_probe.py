"""The peak of live tensor memory on the CPU around a piece of code: a stand-in for the CUDA
allocator's peak statistics, which the CPU allocator does not keep.

Every storage an operation allocates (not a view or an in-place result of its inputs) is
counted until it is freed (weak references on the storage objects, which torch keeps alive
as long as the storage).
"""
from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class PeakMemory(TorchDispatchMode):
    """``with PeakMemory() as probe: ...``; then ``probe.peak`` bytes above the start."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._tracked: set[int] = set()

    def _release(self, key: int, size: int) -> None:
        self.live -= size
        self._tracked.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None) -> Any:  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        # Views and in-place results share an input's storage: nothing new was allocated.
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor) or tensor.device.type != "cpu":
                continue
            storage = tensor.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if size and key not in self._tracked and key not in inputs:
                self._tracked.add(key)
                self.live += size
                weakref.finalize(storage, self._release, key, size)
        self.peak = max(self.peak, self.live)
        return out
