"""Megatron-style tensor parallelism (Shoeybi et al. 2019).

A column-parallel linear splits its output features across the tensor-parallel ranks, a
row-parallel linear its input features; attention and MLP put a column-parallel layer before
a row-parallel one, so each pair needs one all-reduce forward and one backward. The
embedding and the output projection split the vocabulary, and the cross-entropy
(``pretrain.loss.chunked_token_losses``) works on the vocabulary shards directly: full logits
are never gathered during training.

Every sharded parameter records ``tp_split_dim``, ``tp_rank`` and ``tp_size``, which is all
that initialization and checkpoint consolidation need to know about the layout.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from pretrain.loss import chunked_token_losses
from pretrain.model import LayerFactory


class _CopyToTensorParallel(torch.autograd.Function):
    """Identity forward; the gradient of a replicated input sums over the ranks."""

    @staticmethod
    def forward(ctx, x: Tensor, group: dist.ProcessGroup) -> Tensor:  # type: ignore[override]
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class _ReduceFromTensorParallel(torch.autograd.Function):
    """Sum of the ranks' partial results forward; identity backward."""

    @staticmethod
    def forward(ctx, x: Tensor, group: dist.ProcessGroup) -> Tensor:  # type: ignore[override]
        x = x.contiguous()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None


def _mark_shard(param: nn.Parameter, split_dim: int, rank: int, size: int) -> nn.Parameter:
    # DeepSpeed counts a parameter in the gradient norm on every tensor-parallel rank only
    # when it carries Megatron's flag; replicated ones count once (on model-parallel rank 0).
    param.tensor_model_parallel = True  # type: ignore[attr-defined]
    param.tp_split_dim = split_dim  # type: ignore[attr-defined]
    param.tp_rank = rank  # type: ignore[attr-defined]
    param.tp_size = size  # type: ignore[attr-defined]
    return param


def _divide(total: int, parts: int, what: str) -> int:
    if total % parts:
        raise ValueError(f"{what}={total} is not divisible by parallel.tp={parts}")
    return total // parts


class ColumnParallelLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool, group: dist.ProcessGroup) -> None:
        super().__init__()
        self.group = group
        rank, size = dist.get_rank(group), dist.get_world_size(group)
        local = _divide(out_features, size, "output features")
        self.weight = _mark_shard(nn.Parameter(torch.empty(local, in_features)), 0, rank, size)
        self.bias = _mark_shard(nn.Parameter(torch.zeros(local)), 0, rank, size) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(_CopyToTensorParallel.apply(x, self.group), self.weight, self.bias)


class RowParallelLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool, group: dist.ProcessGroup) -> None:
        super().__init__()
        self.group = group
        rank, size = dist.get_rank(group), dist.get_world_size(group)
        local = _divide(in_features, size, "input features")
        self.weight = _mark_shard(nn.Parameter(torch.empty(out_features, local)), 1, rank, size)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None  # added once, after the sum

    def forward(self, x: Tensor) -> Tensor:
        out = _ReduceFromTensorParallel.apply(F.linear(x, self.weight), self.group)
        return out if self.bias is None else out + self.bias


class VocabParallelEmbedding(nn.Module):
    """Each rank holds a contiguous block of the vocabulary's rows; a token's vector comes
    from the rank that holds its row (the others contribute zeros to the sum)."""

    def __init__(self, num_embeddings: int, dim: int, group: dist.ProcessGroup) -> None:
        super().__init__()
        self.group = group
        rank, size = dist.get_rank(group), dist.get_world_size(group)
        local = _divide(num_embeddings, size, "padded vocabulary size")
        self.start = rank * local
        self.weight = _mark_shard(nn.Parameter(torch.empty(local, dim)), 0, rank, size)

    def forward(self, ids: Tensor) -> Tensor:
        local_ids = ids - self.start
        outside = (local_ids < 0) | (local_ids >= self.weight.shape[0])
        vectors = F.embedding(local_ids.masked_fill(outside, 0), self.weight)
        vectors = vectors.masked_fill(outside[..., None], 0.0)
        return _ReduceFromTensorParallel.apply(vectors, self.group)


class TensorParallelLayers(LayerFactory):
    def __init__(self, group: dist.ProcessGroup) -> None:
        self.group = group
        self.tp_size = dist.get_world_size(group)

    def column(self, in_features: int, out_features: int, bias: bool) -> nn.Module:
        return ColumnParallelLinear(in_features, out_features, bias, self.group)

    def row(self, in_features: int, out_features: int, bias: bool) -> nn.Module:
        return RowParallelLinear(in_features, out_features, bias, self.group)

    def embedding(self, num_embeddings: int, dim: int) -> nn.Module:
        return VocabParallelEmbedding(num_embeddings, dim, self.group)

    def tied_logits(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.linear(_CopyToTensorParallel.apply(x, self.group), weight)

    def token_losses(self, logits: Tensor, labels: Tensor) -> Tensor:
        return chunked_token_losses(logits, labels, self.group)
