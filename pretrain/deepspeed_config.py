"""The DeepSpeed config, generated from the Hydra config (never a second file to keep in step)."""
from __future__ import annotations

from typing import Any

import torch

from pretrain.config import Precision, TrainConfig
from pretrain.data.loader import BatchPlan


def resolve_precision(requested: Precision, device: torch.device) -> Precision:
    if requested is not Precision.auto:
        return requested
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return Precision.bf16
    return Precision.fp32


def batch_plan(cfg: TrainConfig, dp_size: int) -> BatchPlan:
    micro, global_batch = cfg.train.micro_batch_size, cfg.train.global_batch_size
    per_step = micro * dp_size
    if micro < 1 or global_batch < 1 or global_batch % per_step:
        raise ValueError(
            f"train.global_batch_size={global_batch} must be a positive multiple of train.micro_batch_size={micro} × "
            f"data-parallel size {dp_size} = {per_step}; e.g. train.global_batch_size={max(per_step, global_batch // per_step * per_step)}"
        )
    return BatchPlan(micro_batch=micro, grad_accum=global_batch // per_step, dp_size=dp_size)


def deepspeed_config(cfg: TrainConfig, plan: BatchPlan, precision: Precision) -> dict[str, Any]:
    if cfg.parallel.zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"parallel.zero_stage={cfg.parallel.zero_stage}: DeepSpeed ZeRO stages are 0, 1, 2 and 3")
    return {
        "train_batch_size": plan.global_batch,
        "train_micro_batch_size_per_gpu": plan.micro_batch,
        "gradient_accumulation_steps": plan.grad_accum,
        # DeepSpeed 0.19 clips at 1.0 unless told otherwise; 0 switches clipping off.
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": {"stage": cfg.parallel.zero_stage},
        "bf16": {"enabled": precision is Precision.bf16},
        "fp16": {"enabled": precision is Precision.fp16, "loss_scale": 0, "initial_scale_power": 16},
        # Our optimizers are torch's own, subclassed to allow skipping a step.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,  # we log ourselves
        "wall_clock_breakdown": False,
    }
