"""Optimizer with weight-decay groups, the learning-rate schedule, and the guard that keeps
non-finite steps out of the weights."""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pretrain.config import NonFinitePolicy, OptimConfig, OptimizerName, Schedule
from pretrain.model.init import local_shape
from pretrain.parallel.tensor import VocabParallelEmbedding


class NonFiniteLossError(RuntimeError):
    pass


class NonFiniteLosses:
    """The number of non-finite micro-batch losses since the last update, kept on the device.
    Built before the loss and the optimizer, and given to both: the step's loss adds to it,
    the optimizer's guard takes it when it decides."""

    def __init__(self) -> None:
        self._count: Optional[Tensor] = None

    def note(self, loss: Tensor) -> None:
        nonfinite = (~torch.isfinite(loss.detach())).sum()
        self._count = nonfinite if self._count is None else self._count + nonfinite

    def take(self, device: torch.device) -> Tensor:
        """The count so far (float, shape [1], on ``device``); the next count starts from zero."""
        noted = self._count
        if noted is None:  # made on the device: a copy from the host would wait for it
            noted = torch.zeros((), dtype=torch.int64, device=device)
        self._count = None
        return noted.to(device, torch.float32).reshape(1)


class GuardedStep:
    """Mixin for a fused torch optimizer: the update happens only if no rank saw a
    non-finite loss since the last update, decided on the device.

    The losses' non-finite count stays a device tensor; the first ``step()`` call of an
    optimizer step all-reduces it over all ranks (every rank calls ``step()``: all pipeline
    stages and ZeRO partitions, some of them once per parameter group or ZeRO sub-group, the
    later calls of the same step, as set by ``begin``, reuse the answer) and hands
    it to the fused update as ``found_inf``, which leaves the parameters and the optimizer
    state untouched where it is set (as for torch's GradScaler). So no step waits for the
    host to read the decision; ``last_step_skipped`` is a device tensor that the trainer
    reads on log steps. DeepSpeed's own bookkeeping (gradient reset, LR schedule, counters)
    carries on as usual.

    No update happens before ``start()``: DeepSpeed's wrapper for bf16/fp16 without ZeRO
    (``FP16_UnfusedOptimizer``) calls ``step()`` with zero gradients while it is built, to
    create the optimizer state. For AdamW that step counts (every later bias correction is
    one step off, so the first real update is 0.73x its size), decays the fp32 master
    weights once, and uses up the guard's decision for the first step.
    """

    flag_device: torch.device = torch.device("cpu")
    nonfinite: NonFiniteLosses  # set by ``build_optimizer``
    current_step: int = 0  # set by ``begin``: a plain number, so nothing here refers back to the trainer
    last_step_skipped: Tensor  # 0-dim bool, on flag_device
    found_inf: Tensor  # read by torch's fused update
    _decided_for: Optional[int] = None
    _started: bool = False

    def start(self) -> None:
        """Allow updates: called once the DeepSpeed engine is built."""
        self._started = True

    def begin(self, step: int) -> None:
        """Called by every rank before optimizer step ``step`` (0-based): the ``step()``
        calls until the next ``begin`` belong to it."""
        self.current_step = step

    def _decide(self) -> None:
        # Pipeline stages before the last see no loss, and join the all-reduce with a zero.
        count = self.nonfinite.take(self.flag_device)
        if dist.is_initialized():
            dist.all_reduce(count)
        self.last_step_skipped = count[0] > 0
        self.found_inf = self.last_step_skipped.float()

    def _decide_once(self, step: int) -> None:
        if self._decided_for != step:
            self._decided_for = step
            self._decide()

    def step(self, closure=None):  # type: ignore[no-untyped-def]
        if not self._started:
            return None
        self._decide_once(self.current_step)
        return super().step(closure)  # type: ignore[misc]

    def settle(self, step: int) -> Tensor:
        """Called by every rank after optimizer step ``step`` (0-based): DeepSpeed may have
        skipped calling ``step()`` itself (its own overflow check on non-finite gradients),
        so make the decision here if it was not made. Returns whether the update was skipped
        (a device tensor)."""
        self._decide_once(step)
        return self.last_step_skipped


class SkippedSteps:
    """The guard's decisions, kept on the device until ``read``: on log steps, before a
    checkpoint and at the end. Under ``train.nonfinite_policy=stop`` the run stops there
    (the skipped update never reached the weights; the steps after it trained on)."""

    def __init__(self, policy: NonFinitePolicy, report: Callable[[str], None]) -> None:
        self.policy = policy
        self.report = report
        self.count = 0
        self._pending: list[tuple[int, Tensor]] = []

    def add(self, step: int, skipped: Tensor) -> None:
        self._pending.append((step, skipped))

    def read(self) -> int:
        """The number of steps skipped so far (a host sync when steps are pending)."""
        if self._pending:
            flags = torch.stack([skipped for _, skipped in self._pending]).tolist()
            steps = [step for (step, _), skipped in zip(self._pending, flags) if skipped]
            self._pending = []
            for step in steps:
                if self.policy is NonFinitePolicy.stop:
                    raise NonFiniteLossError(
                        f"step {step}: non-finite loss; stopping (train.nonfinite_policy=skip drops such steps instead)"
                    )
                self.report(f"step {step}: non-finite loss; the update was skipped (train.nonfinite_policy=skip)")
            self.count += len(steps)
        return self.count


class GuardedAdamW(GuardedStep, torch.optim.AdamW):
    pass


class GuardedSGD(GuardedStep, torch.optim.SGD):
    pass


def parameter_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Matrices of the linears decay; norms, biases and embeddings do not (unless
    ``optim.decay_embeddings_and_norms``): decaying them only shrinks useful scales."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Embedding, VocabParallelEmbedding))}
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        exempt = len(local_shape(param)) < 2 or id(param) in embeddings  # ZeRO-3 may have partitioned it
        (no_decay if exempt and not cfg.decay_embeddings_and_norms else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # An empty group (LoRA's adapters are all matrices) is dropped, as DeepSpeed drops it.
    return [group for group in groups if group["params"]]


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, device: torch.device, nonfinite: NonFiniteLosses
) -> GuardedStep:
    """Fused torch optimizers (one kernel for the whole update on GPU; on every device the
    only kind that skips an update on a device-side flag, see ``GuardedStep``)."""
    groups = parameter_groups(model, cfg)
    optimizer: GuardedStep
    if cfg.name is OptimizerName.adamw:
        optimizer = GuardedAdamW(
            groups,
            lr=cfg.lr,
            betas=(cfg.beta1, cfg.beta2),
            eps=cfg.eps,
            fused=True,
        )
    else:
        optimizer = GuardedSGD(groups, lr=cfg.lr, momentum=cfg.momentum, fused=True)
    optimizer.flag_device = device
    optimizer.nonfinite = nonfinite
    return optimizer


def lr_multiplier(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """Learning rate at optimizer step ``step`` (0-based) as a fraction of ``optim.lr``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule is Schedule.constant:
        return 1.0
    floor = cfg.min_lr_ratio
    if cfg.schedule is Schedule.cosine:
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    decay_start = max_steps - int(cfg.decay_fraction * max_steps)
    if step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start) / max(1, max_steps - decay_start))
    return 1.0 - (1.0 - floor) * progress


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, cfg, max_steps))
