"""Defaults that fit the run, and warnings for settings that would silently do nothing."""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from pretrain.config import TrainConfig

# The micro-batch tried first when train.micro_batch_size is not set, then halved.
PREFERRED_MICRO_BATCH = 8


def fit_micro_batch(cfg: TrainConfig, world_size: int) -> tuple[TrainConfig, Optional[str]]:
    """Fill an unset ``train.micro_batch_size`` with the largest of 8, 4, 2, 1 that divides the
    global batch's share of each data-parallel rank; return the config and what was chosen."""
    if cfg.train.micro_batch_size is not None:
        return cfg, None
    dp = max(1, world_size // max(1, cfg.parallel.tp * cfg.parallel.pp * cfg.parallel.cp))
    per_rank, remainder = divmod(cfg.train.global_batch_size, dp)
    micro = PREFERRED_MICRO_BATCH
    while micro > 1 and (remainder or per_rank % micro):
        micro //= 2
    note = (
        f"train.micro_batch_size not set: chose {micro} (train.global_batch_size={cfg.train.global_batch_size} "
        f"over {dp} data-parallel ranks)"
    )
    return replace(cfg, train=replace(cfg.train, micro_batch_size=micro)), note


def silent_gap_warnings(cfg: TrainConfig, validation_windows: int, has_validation: bool, per_round: int) -> list[str]:
    """Settings that are valid but would quietly not do what a user expects (as log lines)."""
    warnings = []
    if cfg.optim.warmup_steps > cfg.train.max_steps:
        warnings.append(
            f"optim.warmup_steps={cfg.optim.warmup_steps} exceeds train.max_steps={cfg.train.max_steps}: the learning "
            f"rate never reaches optim.lr={cfg.optim.lr}; lower optim.warmup_steps"
        )
    if not has_validation:
        warnings.append(
            f"no '{cfg.data.valid_split}' shards in the training data: no validation loss will be reported "
            "(data_pipeline.tokenize writes them with val_fraction > 0)"
        )
    elif validation_windows < per_round:
        warnings.append(
            f"the '{cfg.data.valid_split}' split holds {validation_windows} windows "
            f"of train.seq_len={cfg.train.seq_len} "
            f"tokens, fewer than one evaluation batch ({per_round}): no validation loss will be reported; "
            "tokenize with a larger val_fraction or lower train.seq_len"
        )
    return [f"warning: {text}" for text in warnings]
