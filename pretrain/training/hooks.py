"""What the training loop does after a step, besides training: evaluation, the log line and
checkpoints (see ``loop.Hook``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

import torch

from pretrain.curves import plot_training_curves
from pretrain.training.loop import Cadence, StepEnd, StepResult
from pretrain.training.metrics import MetricsLogger


class LogWindow:
    """The steps since the last log line: their training time (evaluation and checkpoints
    excluded), this rank's losses and skip flags (on the device), the last step's gradient
    norm and the learning rate its update applied."""

    def __init__(self) -> None:
        self.steps = 0
        self.seconds = 0.0
        self.losses: list[torch.Tensor] = []
        self.skipped: list[torch.Tensor] = []
        self.grad_norm: Optional[float] = None
        self.lr = float("nan")

    def add(self, result: StepResult) -> None:
        self.steps += 1
        self.seconds += result.seconds
        self.losses.append(result.loss)
        self.skipped.append(result.skipped)
        self.grad_norm = result.grad_norm
        self.lr = result.lr

    def read(self) -> tuple[torch.Tensor, Optional[float]]:
        """The mean loss of the steps not skipped (nan if none) and the last step's gradient
        norm (None if it was skipped), with one read from the device: the time the host waits
        for it is the device's work still queued, so it counts as training time."""
        started = time.perf_counter()
        kept = ~torch.stack(self.skipped)
        mean = torch.where(kept, torch.stack(self.losses), 0.0).sum() / kept.sum()  # 0/0: nan
        last_skipped = not bool(kept[-1])  # the one read: waits for the device
        self.seconds += time.perf_counter() - started
        return mean, None if last_skipped else self.grad_norm


class EvaluationHook:
    def __init__(self, evaluate: Callable[[], Optional[dict[str, float]]]) -> None:
        self.evaluate = evaluate

    def after_step(self, end: StepEnd) -> None:
        if end.evaluates:
            end.metrics.update(self.evaluate() or {})

    def at_end(self, step: int) -> None:
        pass


class LoggingHook:
    """One log line per window of steps (``record`` makes it: a collective), with what the
    hooks before it measured; the training curves at the end (``curves_of``: the run dir,
    on the main rank)."""

    def __init__(
        self, logger: MetricsLogger, record: Callable[[LogWindow], dict], *, curves_of: Optional[Path]
    ) -> None:
        self.logger = logger
        self.record = record
        self.curves_of = curves_of
        self.records: list[dict] = []
        self.window = LogWindow()

    def after_step(self, end: StepEnd) -> None:
        self.logger.advance()
        self.window.add(end.result)
        if end.logs:
            record = {**self.record(self.window), **end.metrics}
            self.records.append(record)
            self.logger.log(record)
            self.window = LogWindow()

    def at_end(self, step: int) -> None:
        if self.curves_of is not None and self.records:
            self.logger.message(f"curves: {plot_training_curves(self.curves_of)}")


class CheckpointHook:
    """Checkpoints every ``train.save_every`` steps and at the end (unless
    ``train.save_at_end=false``); the end waits for a background save to complete."""

    def __init__(
        self, save: Callable[[], Path], wait: Callable[[], None], cadence: Cadence, *, last_saved: int
    ) -> None:
        self.save = save
        self.wait = wait
        self.cadence = cadence
        self.last_saved = last_saved

    def after_step(self, end: StepEnd) -> None:
        if self.cadence.saves(end.step):
            self.save()
            self.last_saved = end.step

    def at_end(self, step: int) -> None:
        if self.cadence.save_at_end and self.last_saved != step:
            self.save()
        self.wait()
