"""The training loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def masked_lm_loss(logits: Tensor, labels: Tensor, loss_mask: Tensor) -> Tensor:
    """Cross-entropy over the masked positions, averaged within each sample first and then
    over samples. Per-sample averaging keeps the loss of a global batch the same however it
    is cut into micro-batches and data-parallel shards, even when samples score different
    numbers of tokens (MLM); for CLM it equals the plain token mean."""
    token_loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)
    mask = loss_mask.to(token_loss.dtype)
    per_sample = (token_loss * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return per_sample.mean()
