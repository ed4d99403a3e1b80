"""The training loop: optimizer steps until ``train.max_steps``, with hooks after each step
(evaluation, logging, checkpoints) in the style of OLMo-core's callbacks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

from torch import Tensor

from pretrain.config import TrainLoopConfig


@dataclass
class StepResult:
    """Device tensors, read back only on log steps (a read waits for the device)."""

    loss: Tensor  # this rank's mean loss (0-dim float64); nan/inf when the step was not finite
    skipped: Tensor  # 0-dim bool: the non-finite guard dropped the update
    grad_norm: Optional[float]  # on log steps
    lr: float  # the learning rate this step's update applied (read before the scheduler moved on)
    seconds: float  # host time: without the device's time on log steps, see LogWindow.wait


@dataclass(frozen=True)
class Cadence:
    """Which steps (1-based, counted from the start of training) log, evaluate and save."""

    max_steps: int
    log_every: int
    eval_every: int
    save_every: int
    save_at_end: bool = True

    @classmethod
    def of(cls, train: TrainLoopConfig) -> Cadence:
        return cls(train.max_steps, train.log_every, train.eval_every, train.save_every, train.save_at_end)

    def evaluates(self, step: int) -> bool:
        # Every run ends with an evaluation, however its length compares with eval_every.
        return (bool(self.eval_every) and step % self.eval_every == 0) or step == self.max_steps

    def logs(self, step: int) -> bool:
        return step % self.log_every == 0 or self.evaluates(step)

    def saves(self, step: int) -> bool:
        return bool(self.save_every) and step % self.save_every == 0

    @property
    def writes_checkpoints(self) -> bool:
        return bool(self.save_every) or self.save_at_end


@dataclass
class StepEnd:
    """What the hooks see after a step; ``metrics`` gathers what they add for its log line."""

    step: int
    result: StepResult
    logs: bool
    evaluates: bool
    metrics: dict[str, float] = field(default_factory=dict)


class Hook(Protocol):
    def after_step(self, end: StepEnd) -> None:
        """Called after every step, in the order the hooks were given."""
        ...

    def at_end(self, step: int) -> None:
        """Called once training reached its last step, in the reverse order."""
        ...


def run_loop(train_step: Callable[[bool], StepResult], hooks: list[Hook], cadence: Cadence, start_step: int) -> None:
    """Train from ``start_step`` to ``cadence.max_steps``; ``train_step(with_grad_norm)``
    runs one step (the gradient norm costs a collective, so only steps that log ask for it)."""
    step = start_step
    while step < cadence.max_steps:
        step += 1
        logs = cadence.logs(step)
        end = StepEnd(step, train_step(logs), logs=logs, evaluates=cadence.evaluates(step))
        for hook in hooks:
            hook.after_step(end)
    for hook in reversed(hooks):
        hook.at_end(step)
