"""The training loss."""
from __future__ import annotations

from torch import Tensor


def sample_mean_loss(token_losses: Tensor, loss_mask: Tensor) -> Tensor:
    """Mean of the masked per-token losses, averaged within each sample first and then over
    samples. Per-sample averaging keeps the loss of a global batch the same however it is cut
    into micro-batches and data-parallel shards, even when samples score different numbers
    of tokens (MLM); for CLM it equals the plain token mean."""
    mask = loss_mask.to(token_losses.dtype)
    per_sample = (token_losses * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return per_sample.mean()
