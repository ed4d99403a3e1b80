"""Log-likelihoods under the model, in batches: of whole token streams (perplexity) and of
continuations given a context (multiple choice)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from data_pipeline.progress import progress_bar
from pretrain.model.gpt import GPT


@dataclass
class StreamScore:
    nll: float  # summed negative log-likelihood, nats
    tokens: int  # predicted tokens
    num_bytes: int  # UTF-8 bytes those tokens spell


def window_bounds(length: int, seq_len: int) -> list[tuple[int, int]]:
    """Disjoint windows over a stream: each predicts the ``seq_len`` tokens after its start
    from those before them in the window, so every token but the first is predicted once."""
    return [(start, min(start + seq_len + 1, length)) for start in range(0, length - 1, seq_len)]


@torch.inference_mode()
def score_streams(
    model: GPT,
    streams: Sequence[np.ndarray],
    seq_len: int,
    batch_size: int,
    token_bytes: np.ndarray,
    limit: int | None = None,
    desc: str = "perplexity",
) -> StreamScore:
    """Summed log-likelihood of token streams cut into windows (at most ``limit`` windows)."""
    windows = [(stream, start, end) for stream in streams for start, end in window_bounds(len(stream), seq_len)]
    windows = windows[:limit]
    # Full windows share a length; the short tail windows are batched on their own.
    windows.sort(key=lambda window: window[2] - window[1], reverse=True)
    device = next(model.parameters()).device
    score = StreamScore(0.0, 0, 0)
    for first in progress_bar(range(0, len(windows), batch_size), desc=desc, unit="batch", leave=False):
        batch = windows[first : first + batch_size]
        for length in sorted({end - start for _, start, end in batch}, reverse=True):
            rows = np.stack([stream[start:end] for stream, start, end in batch if end - start == length]).astype(
                np.int64
            )
            ids = torch.from_numpy(rows).to(device)
            logits = model(ids[:, :-1]).float()
            score.nll += float(F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum"))
            score.tokens += int(ids[:, 1:].numel())
            score.num_bytes += int(token_bytes[rows[:, 1:]].sum())
    return score


@torch.inference_mode()
def continuation_log_probs(
    model: GPT, requests: Sequence[tuple[list[int], list[int]]], batch_size: int, pad_id: int, desc: str = "scoring"
) -> list[float]:
    """log p(continuation | context) of each (context ids, continuation ids); a context too
    long for the model loses its oldest tokens."""
    max_len = model.cfg.max_seq_len
    device = next(model.parameters()).device
    inputs = []
    for context, continuation in requests:
        if not continuation:
            raise ValueError("an empty continuation has no log-likelihood")
        if not context:
            raise ValueError("an empty context gives the first token nothing to follow; set start_token=eos or bos")
        if len(continuation) > max_len:
            raise ValueError(f"a continuation of {len(continuation)} tokens exceeds model.max_seq_len={max_len}")
        inputs.append((context + continuation)[-(max_len + 1) :])
    # Longest first: padding stays small and a too-large batch fails at once.
    order = sorted(range(len(requests)), key=lambda index: len(inputs[index]), reverse=True)
    results = [0.0] * len(requests)
    for first in progress_bar(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
        indices = order[first : first + batch_size]
        width = len(inputs[indices[0]]) - 1
        ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
        for row, index in enumerate(indices):
            ids[row, : len(inputs[index]) - 1] = torch.as_tensor(inputs[index][:-1])
        log_probs = model(ids.to(device)).float().log_softmax(dim=-1).cpu()
        for row, index in enumerate(indices):
            targets = torch.as_tensor(requests[index][1])
            end = len(inputs[index]) - 1
            picked = log_probs[row, end - len(targets) : end].gather(-1, targets[:, None])
            results[index] = float(picked.sum())
    return results
