"""FlexAttention block masks: attention that stays on a fused kernel for every objective.

A dense (batch, 1, seq, seq) mask takes SDPA off its flash kernel on CUDA (and grouped-query
attention with a mask onto the math kernel, with O(seq²) fp32 intermediates). A block mask
instead describes which (query, key) pairs may meet with a function, and which 128 x 128
tiles are empty, full or partial; the compiled FlexAttention kernel skips the empty tiles.
The masks are causal or bidirectional, optionally with a prefix that every position sees
(prefix-LM) and optionally confined to documents. This module knows nothing of the model:
``pretrain.model.gpt`` decides when to use it.
"""

from __future__ import annotations

from functools import cache
from typing import Callable, Optional

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

MaskMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


def mask_mod(
    causal: bool, prefix_len: Optional[Tensor], doc_ids: Optional[Tensor], query_positions: Optional[Tensor] = None
) -> MaskMod:
    """Whether query ``q`` of sample ``b`` may attend to key ``k`` (any head ``h``). With
    ``query_positions`` (context parallelism) query ``q`` is this rank's ``q``-th token, at
    global position ``query_positions[q]``; keys are the whole sequence, in global order."""

    def allowed(b: Tensor, h: Tensor, q_index: Tensor, k: Tensor) -> Tensor:
        q = q_index if query_positions is None else query_positions[q_index]
        visible = q >= k if causal else torch.ones_like(q, dtype=torch.bool)
        if prefix_len is not None:
            visible = visible | (k < prefix_len[b])
        if doc_ids is not None:
            visible = visible & (doc_ids[b, q] == doc_ids[b, k])
        return visible

    return allowed


def block_mask(
    causal: bool,
    prefix_len: Optional[Tensor],
    doc_ids: Optional[Tensor],
    seq_len: int,
    device: torch.device,
    query_positions: Optional[Tensor] = None,
) -> BlockMask:
    """The block mask of one batch; per sample when prefixes or documents vary by sample.
    ``seq_len`` counts the keys; the queries are as many, or ``query_positions``'s."""
    per_sample = doc_ids if doc_ids is not None else prefix_len
    batch = None if per_sample is None else per_sample.shape[0]
    queries = seq_len if query_positions is None else len(query_positions)
    return create_block_mask(
        mask_mod(causal, prefix_len, doc_ids, query_positions),
        B=batch,
        H=None,
        Q_LEN=queries,
        KV_LEN=seq_len,
        device=device,
    )


@cache
def _compiled_flex_attention() -> Callable[..., Tensor]:
    # Uncompiled, FlexAttention materializes the whole score matrix; compiled, it is a fused
    # kernel.
    #
    # One compile serves every batch of a run: document ids and prefix lengths reach the
    # kernel as tensors that ``mask_mod`` reads (graph inputs), never as Python constants,
    # and the block mask's tiles are tensors too, so new boundaries are new data for the same
    # graph (tests/pretrain/test_flex_attention.py counts the compiles). What does compile
    # again is a new static configuration: shapes (``dynamic=False``: the fastest kernels for
    # a run's fixed sequence length and micro-batch), dtype, mask kind, grouped-query or not,
    # gradients or not. A training run meets a few (training and evaluation passes). Past
    # ``torch._dynamo.config.recompile_limit`` (8) configurations, Dynamo logs one warning and
    # runs this function uncompiled from then on: the reference implementation, which
    # materializes (batch, heads, seq, seq) scores, with memory and time quadratic in seq.
    return torch.compile(flex_attention, dynamic=False)


def flex_attend(q: Tensor, k: Tensor, v: Tensor, mask: BlockMask, enable_gqa: bool) -> Tensor:
    """Softmax(q kᵀ / √head_dim) v over the pairs ``mask`` allows; (batch, heads, seq, head_dim),
    on the compiled kernel on every device (the model sends only CUDA tensors here; the tests
    send CPU ones too, forward only: torch 2.13 has no FlexAttention backward on CPU)."""
    # Inside a compiled model (train.compile=true) the call joins the model's graph as it is.
    kernel = flex_attention if torch.compiler.is_compiling() else _compiled_flex_attention()
    return kernel(q, k, v, block_mask=mask, enable_gqa=enable_gqa)
