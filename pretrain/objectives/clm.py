"""Causal language modelling: predict every next token."""

from __future__ import annotations

import torch
from torch import Tensor

from pretrain.model.gpt import AttentionMode
from pretrain.objectives.base import Batch, Objective


class CausalLM(Objective):
    name = "clm"
    attention_mode = AttentionMode.causal

    def window_length(self) -> int:
        return self.seq_len + 1  # inputs and their shifted targets share all but one token

    def __call__(self, windows: Tensor, sample_ids: Tensor) -> Batch:
        input_ids = windows[:, :-1]
        return Batch(
            input_ids=input_ids,
            labels=windows[:, 1:],
            loss_mask=torch.ones_like(input_ids, dtype=torch.bool),
            attention=self._attention(input_ids),
        )
