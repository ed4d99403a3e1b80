"""The training loss."""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor


def sample_mean_loss(token_losses: Tensor, loss_mask: Tensor) -> Tensor:
    """Mean of the masked per-token losses, averaged within each sample first and then over
    samples. Per-sample averaging keeps the loss of a global batch the same however it is cut
    into micro-batches and data-parallel shards, even when samples score different numbers
    of tokens (MLM); for CLM it equals the plain token mean."""
    mask = loss_mask.to(token_losses.dtype)
    per_sample = (token_losses * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return per_sample.mean()


# Vocabulary columns turned into fp32 at a time: the loss's own memory is batch x seq x this,
# not the 2-3 fp32 copies of batch x seq x vocab a whole-vocabulary fp32 softmax makes.
VOCAB_CHUNK = 8192


def _all_reduce(
    x: Tensor, group: Optional[dist.ProcessGroup], op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM
) -> Tensor:
    if group is not None:
        dist.all_reduce(x, op=op, group=group)
    return x


def _chunks(vocab: int, chunk: int) -> range:
    return range(0, vocab, chunk)


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Per-token cross-entropy over the vocabulary in fp32 column chunks. With a group, each
    rank holds a contiguous block of the vocabulary (vocabulary parallelism) and three
    all-reduces of (tokens,) tensors replace gathering the logits."""

    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor, chunk: int, group: Optional[dist.ProcessGroup]) -> Tensor:  # type: ignore[override]
        local_vocab = logits.shape[-1]
        start = 0 if group is None else dist.get_rank(group) * local_vocab
        row_max = _all_reduce(logits.max(dim=-1).values.float(), group, dist.ReduceOp.MAX)
        sum_exp = torch.zeros_like(row_max)
        for begin in _chunks(local_vocab, chunk):
            sum_exp += (logits[:, begin : begin + chunk].float() - row_max[:, None]).exp().sum(dim=-1)
        local_labels = labels - start
        here = (local_labels >= 0) & (local_labels < local_vocab)
        target = logits.gather(-1, local_labels.clamp(0, local_vocab - 1)[:, None])[:, 0].float()
        target = _all_reduce(target.masked_fill(~here, 0.0), group)
        log_sum_exp = _all_reduce(sum_exp, group).log() + row_max
        ctx.save_for_backward(logits, local_labels, here, log_sum_exp)
        ctx.chunk = chunk
        return log_sum_exp - target

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        # d loss / d logits = softmax - one_hot(label), one chunk of columns at a time.
        logits, local_labels, here, log_sum_exp = ctx.saved_tensors
        grad_logits = torch.empty_like(logits)
        for begin in _chunks(logits.shape[-1], ctx.chunk):
            probs = (logits[:, begin : begin + ctx.chunk].float() - log_sum_exp[:, None]).exp()
            in_chunk = here & (local_labels >= begin) & (local_labels < begin + probs.shape[-1])
            column = (local_labels - begin).clamp(0, probs.shape[-1] - 1)
            probs.scatter_add_(-1, column[:, None], -in_chunk[:, None].to(probs.dtype))
            grad_logits[:, begin : begin + ctx.chunk] = probs * grad[:, None]
        return grad_logits, None, None, None


def chunked_token_losses(
    logits: Tensor, labels: Tensor, group: Optional[dist.ProcessGroup] = None, chunk: int = VOCAB_CHUNK
) -> Tensor:
    """(batch, seq) cross-entropy of (batch, seq, vocab or vocab shard) logits, in fp32
    whatever the logits' dtype; ``group``: the tensor-parallel group the vocabulary is split
    over, None when every rank holds all of it."""
    flat = _ChunkedCrossEntropy.apply(logits.flatten(0, 1), labels.flatten(), chunk, group)
    return flat.view(labels.shape)


def token_losses(logits: Tensor, labels: Tensor, group: Optional[dist.ProcessGroup] = None) -> Tensor:
    """(batch, seq) cross-entropy, chunked unless the logits are fp32 and whole: there torch's
    own kernel keeps as much for the backward (the log-probabilities in place of the logits,
    which it lets go) and is faster (~9 % of a tiny model's CPU step)."""
    if group is None and logits.dtype == torch.float32:
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)
    return chunked_token_losses(logits, labels, group)
