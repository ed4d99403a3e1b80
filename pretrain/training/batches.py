"""Model inputs on the device: from sampled windows (objective applied) to ``Batch``es, the
next step's prepared on a background thread while this one runs."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Callable, Optional

import numpy as np
import torch

from pretrain.data.loader import BatchPlan, SampleBatch, TrainingStream
from pretrain.objectives import Batch, Objective
from pretrain.parallel.context import ContextParallel


def _map_tensors(batch: Batch, move: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
    attention = batch.attention
    return Batch(
        move(batch.input_ids),
        move(batch.labels),
        move(batch.loss_mask),
        replace(
            attention,
            prefix_len=None if attention.prefix_len is None else move(attention.prefix_len),
            doc_ids=None if attention.doc_ids is None else move(attention.doc_ids),
            query_positions=None if attention.query_positions is None else move(attention.query_positions),
        ),
    )


class BatchMaker:
    """Applies the objective to windows and moves the result to the device; under context
    parallelism, keeps this rank's chunks of each sequence."""

    def __init__(self, objective: Objective, device: torch.device, context: Optional[ContextParallel] = None) -> None:
        self.objective = objective
        self.device = device
        self.context = context

    def on_host(self, windows: np.ndarray, positions: np.ndarray) -> Batch:
        """In page-locked memory when the device is a GPU, so the copy can run asynchronously."""
        batch = self.objective(torch.from_numpy(windows), torch.from_numpy(positions))
        if self.context is not None:
            batch = self.context.local_batch(batch)
        return _map_tensors(batch, torch.Tensor.pin_memory) if self.device.type == "cuda" else batch

    def to_device(self, batch: Batch) -> Batch:
        return _map_tensors(batch, lambda t: t.to(self.device, non_blocking=True))

    def __call__(self, windows: np.ndarray, positions: np.ndarray) -> Batch:
        return self.to_device(self.on_host(windows, positions))


HostBatches = tuple[list[SampleBatch], list[Batch]]


class StepBatches:
    """This rank's micro-batches of the optimizer step that starts after a number of
    consumed samples. They are a function of that number alone (so resume continues the
    order), which lets the next step's be built on a background thread (sampling, objective,
    pinning) while this step runs: the same batches, in the same order, as built in place."""

    def __init__(self, stream: TrainingStream, make_batch: BatchMaker, plan: BatchPlan, *, dp_rank: int) -> None:
        self.stream = stream
        self.make_batch = make_batch
        self.plan = plan
        self.dp_rank = dp_rank
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch-batches")
        self._next: Optional[tuple[int, Future[HostBatches]]] = None

    def __call__(self, consumed_samples: int, *, prefetch_next: bool) -> tuple[list[SampleBatch], list[Batch]]:
        """This step's batches on the device; with ``prefetch_next``, the next step's start building."""
        if self._next is not None and self._next[0] == consumed_samples:
            samples, batches = self._next[1].result()
        else:
            samples, batches = self._on_host(consumed_samples)
        self._next = None
        if prefetch_next:
            upcoming = consumed_samples + self.plan.global_batch
            self._next = (upcoming, self._thread.submit(self._on_host, upcoming))
        return samples, [self.make_batch.to_device(batch) for batch in batches]

    def _on_host(self, consumed_samples: int) -> HostBatches:
        positions = [self.plan.positions(consumed_samples, m, self.dp_rank) for m in range(self.plan.grad_accum)]
        samples = [self.stream.sample(p) for p in positions]
        return samples, [self.make_batch.on_host(sample.windows, sample.positions) for sample in samples]

    def close(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)
