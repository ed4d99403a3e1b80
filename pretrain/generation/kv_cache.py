"""Keys and values of the tokens already seen, so that each decoding step runs the model on
the new tokens only.

``GPT.forward(..., cache=KVCache(...))`` asks the cache for the attention mask of the new
positions over every stored one, and each attention layer appends its new keys and values
to its :class:`LayerCache`. Storage is allocated once for ``capacity`` positions.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from pretrain.model.gpt import AttentionMode, AttentionSpec


class LayerCache:
    """One attention layer's keys and values, (batch, kv_heads, positions, head_dim)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.length = 0
        self.keys: Optional[Tensor] = None
        self.values: Optional[Tensor] = None

    def append(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Store the new positions' keys and values; return those of all positions so far."""
        if self.keys is None or self.values is None:
            shape = (*keys.shape[:2], self.capacity, keys.shape[-1])
            self.keys, self.values = keys.new_empty(shape), values.new_empty(shape)
        end = self.length + keys.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache full: {end} positions do not fit its capacity of {self.capacity}")
        self.keys[:, :, self.length : end] = keys
        self.values[:, :, self.length : end] = values
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def reorder(self, rows: Tensor) -> None:
        if self.keys is not None and self.values is not None:
            self.keys = self.keys.index_select(0, rows)
            self.values = self.values.index_select(0, rows)


class KVCache:
    """The whole model's cache: a :class:`LayerCache` per block, and the document id of every
    stored position (left padding is a document of its own, so real tokens never see it)."""

    def __init__(self, num_layers: int, capacity: int) -> None:
        self.layers = [LayerCache(capacity) for _ in range(num_layers)]
        self.capacity = capacity
        self.length = 0
        self.doc_ids: Optional[Tensor] = None  # (batch, length), once any step gave doc ids

    def extend(self, spec: AttentionSpec, new_len: int, device: torch.device) -> tuple[Optional[Tensor], bool]:
        """``(mask, is_causal)`` for SDPA of ``new_len`` new positions over all stored and
        new ones; records the new positions. Only causal attention can be cached."""
        if spec.mode is not AttentionMode.causal:
            raise ValueError(f"the KV cache serves causal attention only, not {spec.mode.value} (objective=clm models)")
        past = self.length
        self.length = past + new_len
        new_doc_ids = spec.doc_ids
        if new_doc_ids is None and self.doc_ids is not None:
            # New positions without ids continue each row's last document.
            new_doc_ids = self.doc_ids[:, -1:].expand(-1, new_len)
        if new_doc_ids is None:
            if past == 0:
                return None, True
            if new_len == 1:
                return None, False  # one query sees every stored key
        else:
            if self.doc_ids is None and past:
                raise ValueError("attention.doc_ids must be given from the first cached step on, or never")
            new_doc_ids = new_doc_ids.to(device)
            self.doc_ids = new_doc_ids if self.doc_ids is None else torch.cat((self.doc_ids, new_doc_ids), dim=1)
        query = torch.arange(past, self.length, device=device)
        key = torch.arange(self.length, device=device)
        allowed = (key[None, :] <= query[:, None])[None]  # (1, query, key)
        if new_doc_ids is not None:
            assert self.doc_ids is not None
            allowed = allowed & (new_doc_ids[:, :, None] == self.doc_ids[:, None, :])
        return allowed[:, None], False

    def reorder(self, rows: Tensor) -> None:
        """Keep, repeat or permute batch rows (beam search): row i becomes old row ``rows[i]``."""
        for layer in self.layers:
            layer.reorder(rows)
        if self.doc_ids is not None:
            self.doc_ids = self.doc_ids.index_select(0, rows.to(self.doc_ids.device))
