"""Model inputs on the device: from sampled windows (objective applied) to ``Batch``es."""
from __future__ import annotations

import numpy as np
import torch

from pretrain.data.loader import BatchPlan, SampleBatch, TrainingStream
from pretrain.objectives import Batch, Objective


class BatchMaker:
    """Applies the objective to windows and moves the result to the device."""

    def __init__(self, objective: Objective, device: torch.device) -> None:
        self.objective = objective
        self.device = device

    def __call__(self, windows: np.ndarray, positions: np.ndarray) -> Batch:
        return to_device(self.objective(torch.from_numpy(windows), torch.from_numpy(positions)), self.device)


def to_device(batch: Batch, device: torch.device) -> Batch:
    attention = batch.attention
    attention.prefix_len = None if attention.prefix_len is None else attention.prefix_len.to(device)
    attention.doc_ids = None if attention.doc_ids is None else attention.doc_ids.to(device)
    return Batch(batch.input_ids.to(device), batch.labels.to(device), batch.loss_mask.to(device), attention)


class StepBatches:
    """This rank's micro-batches of the optimizer step that starts after a number of
    consumed samples (a function of that number alone, so resume continues the order)."""

    def __init__(self, stream: TrainingStream, make_batch: BatchMaker, plan: BatchPlan, *, dp_rank: int) -> None:
        self.stream = stream
        self.make_batch = make_batch
        self.plan = plan
        self.dp_rank = dp_rank

    def __call__(self, consumed_samples: int) -> tuple[list[SampleBatch], list[Batch]]:
        positions = [self.plan.positions(consumed_samples, m, self.dp_rank) for m in range(self.plan.grad_accum)]
        samples = [self.stream.sample(p) for p in positions]
        return samples, [self.make_batch(sample.windows, sample.positions) for sample in samples]
