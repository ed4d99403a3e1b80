"""Supervised fine-tuning on chat shards (``data_pipeline.tokenize format=chat``): predict
the next token, scored only where the shard's loss mask marks a target (the assistant's
tokens by default), with attention kept inside each conversation of a packed sample.

A window is (2, seq_len + 1): the tokens and their mask bytes (LOSS_BIT: a target,
START_BIT: a conversation starts). The loss is the mean over each sample's target tokens,
then over samples (pretrain/model/loss.py), so with ``chat.packing=pad`` every conversation
weighs the same, whatever its length (Ouyang et al. 2022 train on the demonstrations'
tokens alone; docs/sft.md)."""

from __future__ import annotations

import torch
from torch import Tensor

from data_pipeline.formats.special_tokens import SpecialTokens
from data_pipeline.formats.token_shards import LOSS_BIT, START_BIT
from pretrain.model.gpt import AttentionMode, AttentionSpec
from pretrain.objectives.base import Batch, Objective


class SupervisedFineTuning(Objective):
    name = "sft"
    attention_mode = AttentionMode.causal

    def __init__(self, special: SpecialTokens, seq_len: int, seed: int, document_masking: bool = True) -> None:
        if not document_masking:
            raise ValueError(
                "objective.document_masking=false: sft always keeps the conversations of a sample apart; "
                "use objective=sft (configs/objective/sft.yaml) and leave it true"
            )
        super().__init__(special, seq_len, seed, document_masking=True)

    def window_length(self) -> int:
        return self.seq_len + 1

    def __call__(self, windows: Tensor, sample_ids: Tensor) -> Batch:
        tokens, bits = windows[:, 0], windows[:, 1]
        input_ids = tokens[:, :-1]
        starts = (bits[:, :-1] & START_BIT) != 0
        return Batch(
            input_ids=input_ids,
            labels=tokens[:, 1:],
            # position t predicts token t + 1: scored where that token is a target
            loss_mask=(bits[:, 1:] & LOSS_BIT) != 0,
            attention=AttentionSpec(mode=self.attention_mode, doc_ids=torch.cumsum(starts.to(torch.int64), dim=1)),
        )
