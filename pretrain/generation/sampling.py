"""Greedy decoding and sampling: one token per row per step, chosen from that row's scores."""

from __future__ import annotations

from typing import Iterator

import torch

from pretrain.generation.logits import next_token_scores, pick_tokens
from pretrain.generation.settings import GenerationSettings
from pretrain.generation.state import DecodingState
from pretrain.generation.stopping import Completions


def decode_step_by_step(
    state: DecodingState,
    completions: Completions,
    settings: GenerationSettings,
    vocab_size: int,
    generator: torch.Generator,
) -> Iterator[dict[int, int]]:
    """Fill ``completions``; after each step yield ``{row: token}`` for the rows that took
    a token (EOS included), so that a caller can stream them."""
    for step in range(settings.max_new_tokens):
        scores = next_token_scores(state.logits, state.tokens, state.real, vocab_size, settings)
        tokens = pick_tokens(scores, settings, generator).cpu()
        rows = completions.add(tokens)
        yield {row: int(tokens[row]) for row in rows}
        if completions.all_finished or step == settings.max_new_tokens - 1:
            return
        state.advance(tokens)  # finished rows run on too: their tokens are never read
