"""Training objectives: each turns token windows into inputs, labels, loss mask and the
attention mode (see :class:`pretrain.objectives.base.Batch`)."""

from __future__ import annotations

from dataclasses import dataclass

from data_pipeline.formats.special_tokens import SpecialTokens
from pretrain.choices import Choice
from pretrain.objectives.base import Batch, Objective
from pretrain.objectives.clm import CausalLM
from pretrain.objectives.mlm import MaskedLM
from pretrain.objectives.sft import SupervisedFineTuning
from pretrain.objectives.span import SpanCorruption


class ObjectiveName(Choice):
    clm = "clm"
    mlm = "mlm"
    span = "span"
    sft = "sft"  # chat shards with a loss mask (docs/sft.md)


@dataclass
class ObjectiveConfig:
    """Schema of ``configs/objective/``; fields beyond ``name`` apply to the objective named
    in their comment."""

    name: ObjectiveName = ObjectiveName.clm
    # Keep attention inside each document of a packed window (clm, mlm; sft always does).
    document_masking: bool = False
    # mlm
    mask_rate: float = 0.15
    mask_token_fraction: float = 0.8
    random_token_fraction: float = 0.1
    # span
    noise_density: float = 0.15
    mean_span_length: float = 3.0


def build_objective(cfg: ObjectiveConfig, special: SpecialTokens, seq_len: int, seed: int) -> Objective:
    common = dict(special=special, seq_len=seq_len, seed=seed, document_masking=cfg.document_masking)
    if cfg.name is ObjectiveName.clm:
        return CausalLM(**common)
    if cfg.name is ObjectiveName.sft:
        return SupervisedFineTuning(**common)
    if cfg.name is ObjectiveName.mlm:
        return MaskedLM(
            **common,
            mask_rate=cfg.mask_rate,
            mask_token_fraction=cfg.mask_token_fraction,
            random_token_fraction=cfg.random_token_fraction,
        )
    return SpanCorruption(**common, noise_density=cfg.noise_density, mean_span_length=cfg.mean_span_length)


__all__ = ["Batch", "Objective", "ObjectiveConfig", "ObjectiveName", "build_objective"]
