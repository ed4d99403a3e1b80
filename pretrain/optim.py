"""Optimizer with weight-decay groups, and the learning-rate schedule."""
from __future__ import annotations

import math

import torch
from torch import nn

from pretrain.config import OptimConfig, OptimizerName, Schedule


class SkippableStep:
    """Lets the trainer drop one optimizer update (a step whose loss was not finite) while
    DeepSpeed's own bookkeeping (micro-step counters, gradient reset, LR schedule) goes on."""

    skip_next_step: bool = False

    def step(self, closure=None):  # type: ignore[no-untyped-def]
        if self.skip_next_step:
            self.skip_next_step = False
            return None
        return super().step(closure)  # type: ignore[misc]


class SkippableAdamW(SkippableStep, torch.optim.AdamW):
    pass


class SkippableSGD(SkippableStep, torch.optim.SGD):
    pass


def parameter_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Matrices of the linears decay; norms, biases and embeddings do not (unless
    ``optim.decay_embeddings_and_norms``): decaying them only shrinks useful scales."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        exempt = param.dim() < 2 or id(param) in embeddings
        (no_decay if exempt and not cfg.decay_embeddings_and_norms else decay).append(param)
    return [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg)
    if cfg.name is OptimizerName.adamw:
        return SkippableAdamW(
            groups,
            lr=cfg.lr,
            betas=(cfg.beta1, cfg.beta2),
            eps=cfg.eps,
            fused=device.type == "cuda",  # one kernel for the whole update on GPU
        )
    return SkippableSGD(groups, lr=cfg.lr, momentum=cfg.momentum)


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
