"""From next-token logits to the scores a decoding strategy picks from; all (batch, vocab)."""

from __future__ import annotations

import torch
from torch import Tensor

from pretrain.generation.settings import GenerationSettings, Strategy


def mask_padding_ids(logits: Tensor, vocab_size: int) -> Tensor:
    """The model's vocabulary is padded past the tokenizer's; those ids are no tokens."""
    return logits.index_fill(-1, torch.arange(vocab_size, logits.shape[-1], device=logits.device), float("-inf"))


def repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """CTRL (Keskar et al., 2019): divide a seen token's positive logit by ``penalty``,
    multiply its negative one, so that it becomes less likely either way."""
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth_best = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_best, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Keep the smallest set of most likely tokens whose total probability reaches ``p``."""
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the more likely tokens
    drop_sorted = mass_before >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def seen_tokens(tokens: Tensor, real: Tensor, vocab: int) -> Tensor:
    """(batch, vocab) True where the row's real tokens include the id."""
    seen = torch.zeros(tokens.shape[0], vocab, dtype=torch.bool, device=tokens.device)
    return seen.scatter_(1, tokens, real)


def next_token_scores(
    logits: Tensor, tokens: Tensor, real: Tensor, vocab_size: int, settings: GenerationSettings
) -> Tensor:
    """Filtered logits of the next token, given each row's tokens so far (``real`` marks
    which of them are not padding). Sampling filters apply to strategy=sample only."""
    logits = mask_padding_ids(logits.float(), vocab_size)
    if settings.repetition_penalty != 1.0:
        logits = repetition_penalty(logits, seen_tokens(tokens, real, logits.shape[-1]), settings.repetition_penalty)
    if settings.strategy is Strategy.sample:
        logits = top_p_filter(top_k_filter(logits / settings.temperature, settings.top_k), settings.top_p)
    return logits


def pick_tokens(scores: Tensor, settings: GenerationSettings, generator: torch.Generator) -> Tensor:
    """(batch,) the next token of each row: the best one, or a draw for strategy=sample."""
    if settings.strategy is Strategy.sample:
        return torch.multinomial(scores.softmax(dim=-1), 1, generator=generator).squeeze(-1)
    return scores.argmax(dim=-1)
