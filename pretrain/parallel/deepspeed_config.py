"""The DeepSpeed config, generated from the Hydra config (never a second file to keep in step)."""

from __future__ import annotations

from typing import Any

import torch

from pretrain.config import ParallelConfig, Precision, TrainConfig, TrainLoopConfig
from pretrain.data.loader import BatchPlan


def resolve_precision(requested: Precision, device: torch.device) -> Precision:
    if requested is not Precision.auto:
        return requested
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return Precision.bf16
    return Precision.fp32


def batch_plan(train: TrainLoopConfig, dp_size: int) -> BatchPlan:
    """The cut of the global batch; ``validate_layout`` has checked that it divides evenly."""
    micro = train.micro_batch_size
    return BatchPlan(micro_batch=micro, grad_accum=train.global_batch_size // (micro * dp_size), dp_size=dp_size)


def _gradient_accumulation_dtype(zero_stage: int, precision: Precision) -> dict[str, Any]:
    """Sum bf16 gradients in fp32 where DeepSpeed can (ZeRO 1-3); ZeRO 0 cannot, and
    accumulates in bf16 (prefer parallel=zero1 for bf16 with gradient accumulation)."""
    if precision is Precision.bf16 and zero_stage >= 1:
        return {"data_types": {"grad_accum_dtype": "fp32"}}
    return {}


def zero_optimization(parallel: ParallelConfig) -> dict[str, Any]:
    """ZeRO's stage and communication settings, all from ``parallel.*``."""
    for name in ("reduce_bucket_size", "allgather_bucket_size"):
        if getattr(parallel, name) <= 0:
            raise ValueError(
                f"parallel.{name}={getattr(parallel, name)}: a bucket holds at least one element; e.g. 200000000"
            )
    return {
        "stage": parallel.zero_stage,
        "overlap_comm": parallel.overlap_comm,
        "contiguous_gradients": parallel.contiguous_gradients,
        "reduce_bucket_size": parallel.reduce_bucket_size,
        "allgather_bucket_size": parallel.allgather_bucket_size,
    }


def deepspeed_config(cfg: TrainConfig, plan: BatchPlan, precision: Precision) -> dict[str, Any]:
    return {
        "train_batch_size": plan.global_batch,
        "train_micro_batch_size_per_gpu": plan.micro_batch,
        "gradient_accumulation_steps": plan.grad_accum,
        # DeepSpeed 0.19 clips at 1.0 unless told otherwise; 0 switches clipping off.
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": zero_optimization(cfg.parallel),
        **_gradient_accumulation_dtype(cfg.parallel.zero_stage, precision),
        "bf16": {"enabled": precision is Precision.bf16},
        "fp16": {"enabled": precision is Precision.fp16, "loss_scale": 0, "initial_scale_power": 16},
        # Our optimizers are torch's own, subclassed to allow skipping a step.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,  # we log ourselves
        "wall_clock_breakdown": False,
    }
