"""A batch of prompts growing by one token per row per step, and the model run that gives
each step's next-token logits.

Prompts of different lengths are left-padded so that every row's newest token sits in the
last column. Padding is kept out of sight by document ids (padding is document 0, the text
document 1) and each row's positions count from its first real token, so a padded prompt
gets exactly the logits it would get alone.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from pretrain.generation.kv_cache import KVCache
from pretrain.model.gpt import GPT, AttentionSpec


class DecodingState:
    def __init__(
        self, model: GPT, prompts: Sequence[Sequence[int]], pad_id: int, max_new_tokens: int, use_cache: bool
    ) -> None:
        if not prompts or any(len(prompt) == 0 for prompt in prompts):
            raise ValueError("every prompt needs at least one token (set start_token=eos or bos for empty prompts)")
        self.model = model
        device = next(model.parameters()).device
        width = max(len(prompt) for prompt in prompts)
        self.tokens = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
        self.real = torch.zeros_like(self.tokens, dtype=torch.bool)
        for row, prompt in enumerate(prompts):
            self.tokens[row, width - len(prompt) :] = torch.as_tensor(list(prompt), device=device)
            self.real[row, width - len(prompt) :] = True
        self.positions = (self.real.long().cumsum(dim=1) - 1).clamp(min=0)
        self.doc_ids: Optional[Tensor] = None if bool(self.real.all()) else self.real.long()
        self.cache = KVCache(len(model.blocks), width + max_new_tokens) if use_cache else None
        self.logits = self._run(self.tokens, self.positions, self.doc_ids)

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @torch.no_grad()
    def _run(self, tokens: Tensor, positions: Tensor, doc_ids: Optional[Tensor]) -> Tensor:
        """Float logits (batch, padded vocab) after the last column."""
        logits = self.model(tokens, AttentionSpec(doc_ids=doc_ids), positions, self.cache)
        return logits[:, -1].float()

    def advance(self, new_tokens: Tensor) -> Tensor:
        """Append one token per row; return the logits of the token after it."""
        new_tokens = new_tokens[:, None].to(self.tokens.device)
        new_positions = self.positions[:, -1:] + 1
        self.tokens = torch.cat((self.tokens, new_tokens), dim=1)
        self.real = torch.cat((self.real, torch.ones_like(new_tokens, dtype=torch.bool)), dim=1)
        self.positions = torch.cat((self.positions, new_positions), dim=1)
        if self.doc_ids is not None:
            self.doc_ids = torch.cat((self.doc_ids, torch.ones_like(new_tokens)), dim=1)
        if self.cache is not None:  # the cache continues each row's last document by itself
            self.logits = self._run(new_tokens, new_positions, None)
        else:
            self.logits = self._run(self.tokens, self.positions, self.doc_ids)
        return self.logits

    def reorder(self, rows: Tensor) -> None:
        """Row i becomes old row ``rows[i]`` (beam search keeps, repeats and drops rows)."""
        rows = rows.to(self.tokens.device)
        self.tokens, self.real, self.positions = (
            t.index_select(0, rows) for t in (self.tokens, self.real, self.positions)
        )
        self.logits = self.logits.index_select(0, rows)
        if self.doc_ids is not None:
            self.doc_ids = self.doc_ids.index_select(0, rows)
        if self.cache is not None:
            self.cache.reorder(rows)
