"""Optimizer with weight-decay groups, the learning-rate schedule, and the guard that keeps
non-finite steps out of the weights."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pretrain.config import NonFinitePolicy, OptimConfig, OptimizerName, Schedule
from pretrain.init import local_shape
from pretrain.parallel.tensor import VocabParallelEmbedding


class NonFiniteLossError(RuntimeError):
    pass


class GuardedStep:
    """Mixin for a torch optimizer: the update happens only if no rank saw a non-finite loss
    since the last update.

    Every rank calls ``step()`` at each optimizer step (all pipeline stages and ZeRO
    partitions), some of them once per parameter group or ZeRO sub-group. The first call of
    a step settles the question with one all-reduce over all ranks; the later calls of the
    same step (as counted by ``step_counter``) reuse the answer. DeepSpeed's own bookkeeping
    (gradient reset, LR schedule, counters) carries on as usual.

    No update happens before ``start()``: DeepSpeed's wrapper for bf16/fp16 without ZeRO
    (``FP16_UnfusedOptimizer``) calls ``step()`` with zero gradients while it is built, to
    create the optimizer state. For AdamW that step counts (every later bias correction is
    one step off, so the first real update is 0.73x its size), decays the fp32 master
    weights once, and uses up the guard's decision for the first step.
    """

    nonfinite_policy: NonFinitePolicy = NonFinitePolicy.stop
    last_step_skipped: bool = False
    flag_device: torch.device = torch.device("cpu")
    step_counter: Callable[[], int] = staticmethod(lambda: 0)
    _nonfinite_losses: int = 0
    _decided_for: Optional[int] = None
    _started: bool = False

    def start(self) -> None:
        """Allow updates: called once the DeepSpeed engine is built."""
        self._started = True

    def note_loss(self, loss: Tensor) -> None:
        if not torch.isfinite(loss.detach()).all():
            self._nonfinite_losses += 1

    def _decide(self) -> None:
        flag = torch.tensor([float(self._nonfinite_losses)], device=self.flag_device)
        self._nonfinite_losses = 0
        if dist.is_initialized():
            dist.all_reduce(flag)
        self.last_step_skipped = bool(flag.item() > 0)
        if self.last_step_skipped and self.nonfinite_policy is NonFinitePolicy.stop:
            raise NonFiniteLossError(
                f"step {self.step_counter() + 1}: non-finite loss in {int(flag.item())} micro-batch(es); stopping "
                "(train.nonfinite_policy=skip drops such steps instead)"
            )

    def _decide_once(self, step: int) -> None:
        if self._decided_for != step:
            self._decided_for = step
            self._decide()

    def step(self, closure=None):  # type: ignore[no-untyped-def]
        if not self._started:
            return None
        self._decide_once(self.step_counter())
        if self.last_step_skipped:
            return None
        return super().step(closure)  # type: ignore[misc]

    def settle(self, step: int) -> None:
        """Called by every rank after optimizer step ``step`` (0-based): DeepSpeed may have
        skipped calling ``step()`` itself (its own overflow check on non-finite gradients),
        so make the decision here if it was not made, keeping the count and report right."""
        self._decide_once(step)


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
    return [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, device: torch.device, nonfinite_policy: NonFinitePolicy
) -> GuardedStep:
    groups = parameter_groups(model, cfg)
    optimizer: GuardedStep
    if cfg.name is OptimizerName.adamw:
        optimizer = GuardedAdamW(
            groups,
            lr=cfg.lr,
            betas=(cfg.beta1, cfg.beta2),
            eps=cfg.eps,
            fused=device.type == "cuda",  # one kernel for the whole update on GPU
        )
    else:
        optimizer = GuardedSGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    optimizer.nonfinite_policy = nonfinite_policy
    optimizer.flag_device = device
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


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, cfg, max_steps))
