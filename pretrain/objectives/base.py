"""What every objective produces, and the pieces they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from data_pipeline.formats.special_tokens import SpecialTokens
from pretrain.model.gpt import AttentionMode, AttentionSpec


@dataclass
class Batch:
    """Model inputs with per-position targets: the loss at position t compares the logits
    there with ``labels[:, t]`` wherever ``loss_mask[:, t]`` is set."""

    input_ids: Tensor  # (batch, seq) int64
    labels: Tensor  # (batch, seq) int64
    loss_mask: Tensor  # (batch, seq) bool
    attention: AttentionSpec


def sample_generator(seed: int, sample_id: int) -> torch.Generator:
    """A generator owned by one sample, so its noise does not depend on how samples are
    batched or split across ranks (and a resumed run draws the same noise)."""
    # Large odd multiplier spreads neighbouring ids; the result stays within 63 bits.
    return torch.Generator().manual_seed((seed * 0x9E3779B97F4A7C15 + sample_id) % (2**63 - 1))


def document_ids(input_ids: Tensor, eos_id: int) -> Tensor:
    """Index of the document each position belongs to; an EOS belongs to the document it ends."""
    is_eos = (input_ids == eos_id).to(torch.int64)
    return torch.cumsum(is_eos, dim=1) - is_eos


class Objective(ABC):
    name: str
    attention_mode: AttentionMode

    def __init__(self, special: SpecialTokens, seq_len: int, seed: int, document_masking: bool = False) -> None:
        self.special = special
        self.seq_len = seq_len
        self.seed = seed
        self.document_masking = document_masking

    @abstractmethod
    def window_length(self) -> int:
        """How many raw tokens one sample consumes from the token stream."""

    @abstractmethod
    def __call__(self, windows: Tensor, sample_ids: Tensor) -> Batch:
        """Turn (batch, window_length) token windows into a training batch. ``sample_ids``
        (batch,) are the samples' global indices and seed their noise."""

    def _attention(self, input_ids: Tensor, prefix_len: Tensor | None = None) -> AttentionSpec:
        doc_ids = document_ids(input_ids, self.special.eos_id) if self.document_masking else None
        return AttentionSpec(mode=self.attention_mode, prefix_len=prefix_len, doc_ids=doc_ids)
