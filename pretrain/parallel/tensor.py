"""Megatron-style tensor parallelism (Shoeybi et al. 2019), with optional sequence parallelism
(Korthikanti et al. 2022).

A column-parallel linear splits its output features across the tensor-parallel ranks, a
row-parallel linear its input features; attention and MLP put column-parallel layers before
a row-parallel one. The column-parallel layers themselves do not communicate: their input
enters the tensor-parallel region once (``gather_input``) however many of them read it (q, k
and v; gate and up), so a layer costs Megatron's 2 all-reduces forward (after each
row-parallel layer) and 2 backward (where attention's and the MLP's inputs entered).

With ``sequence_parallel`` the activations between a row-parallel output and the next
column-parallel input are split over the sequence instead of replicated: the row-parallel
sum becomes a reduce-scatter, the entry an all-gather (and their backward the other way
round), and norms, dropout and residual adds run on 1/tp of the tokens. The parameters those
run with (norm weights, row-parallel biases) see only this rank's tokens, so their gradients
are summed over the tensor-parallel group in the backward pass.

The embedding and the output projection split the vocabulary, and the cross-entropy
(``pretrain.model.loss.chunked_token_losses``) works on the vocabulary shards directly: full logits
are never gathered during training.

Dropout of the replicated activations (embedding, residual) draws the same mask on every
rank; attention dropout, on this rank's heads, draws from the rank's own stream
(``pretrain.parallel.rng``), as Megatron's does.

Every sharded parameter records ``tp_split_dim``, ``tp_rank`` and ``tp_size``, which is all
that initialization and checkpoint consolidation need to know about the layout.
"""

from __future__ import annotations

from typing import Callable, ContextManager, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from pretrain.model.config import ModelConfig, Norm
from pretrain.model.fused_linear import with_adapter
from pretrain.model.gpt import LayerFactory
from pretrain.model.loss import token_losses
from pretrain.parallel import rng

Collective = Callable[[Tensor, dist.ProcessGroup], Tensor]
SEQUENCE_DIM = -2  # activations are (batch, seq, features), position embeddings (seq, features)


def _conjugate_pair(name: str, forward: Collective, backward: Collective) -> type[torch.autograd.Function]:
    """An autograd function doing ``forward`` in the forward pass and ``backward`` to the
    gradient (Megatron's f/g pairs: each collective's gradient is its mirror)."""

    def run_forward(ctx, x: Tensor, group: dist.ProcessGroup) -> Tensor:  # type: ignore[no-untyped-def]
        ctx.group = group
        return forward(x, group)

    def run_backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[no-untyped-def]
        return backward(grad, ctx.group), None

    return type(
        name, (torch.autograd.Function,), {"forward": staticmethod(run_forward), "backward": staticmethod(run_backward)}
    )


def _identity(x: Tensor, group: dist.ProcessGroup) -> Tensor:
    return x.view_as(x)


def _all_reduce(x: Tensor, group: dist.ProcessGroup) -> Tensor:
    x = x.contiguous()
    dist.all_reduce(x, group=group)
    return x


def _all_gather_sequence(x: Tensor, group: dist.ProcessGroup) -> Tensor:
    """The ranks' sequence shards, concatenated in rank order along the sequence."""
    size = dist.get_world_size(group)
    shard = x.movedim(SEQUENCE_DIM, 0).contiguous()  # the collective concatenates along dim 0
    whole = shard.new_empty((size * shard.shape[0], *shard.shape[1:]))
    dist.all_gather_single(whole, shard, group=group)
    # Contiguous in the caller's layout: q, k and v (gate and up) then share one saved input;
    # a strided view would be copied, and that copy saved, by each linear that reads it.
    return whole.movedim(0, SEQUENCE_DIM).contiguous()


def _reduce_scatter_sequence(x: Tensor, group: dist.ProcessGroup) -> Tensor:
    """The sum over the ranks of this rank's sequence shard."""
    size = dist.get_world_size(group)
    whole = x.movedim(SEQUENCE_DIM, 0).contiguous()
    shard = whole.new_empty((whole.shape[0] // size, *whole.shape[1:]))
    dist.reduce_scatter_single(shard, whole, group=group)
    return shard.movedim(0, SEQUENCE_DIM).contiguous()


def _sequence_shard(x: Tensor, group: dist.ProcessGroup) -> Tensor:
    return x.chunk(dist.get_world_size(group), dim=SEQUENCE_DIM)[dist.get_rank(group)].contiguous()


# A replicated input entering the tensor-parallel region: its gradient sums over the ranks.
_CopyToTensorParallel = _conjugate_pair("_CopyToTensorParallel", _identity, _all_reduce)
# The sum of the ranks' partial results.
_ReduceFromTensorParallel = _conjugate_pair("_ReduceFromTensorParallel", _all_reduce, _identity)
# Sequence shards -> the whole sequence on every rank (the sequence-parallel entry).
_GatherSequence = _conjugate_pair("_GatherSequence", _all_gather_sequence, _reduce_scatter_sequence)
# Partial results -> this rank's shard of their sum (the sequence-parallel exit).
_ReduceScatterSequence = _conjugate_pair("_ReduceScatterSequence", _reduce_scatter_sequence, _all_gather_sequence)
# A value every rank has whole -> this rank's shard; the shards' gradients are gathered, so a
# replicated parameter behind it gets its whole gradient.
_ScatterSequence = _conjugate_pair("_ScatterSequence", _sequence_shard, _all_gather_sequence)


def summed_gradient(param: Optional[Tensor], group: dist.ProcessGroup) -> Optional[Tensor]:
    """``param`` for use on this rank's sequence shard only: its gradient sums over the ranks."""
    return None if param is None else _CopyToTensorParallel.apply(param, group)


def mark_shard(param: nn.Parameter, split_dim: int, rank: int, size: int) -> nn.Parameter:
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
    """This rank's block of output features. No communication: its input comes through
    ``TensorParallelLayers.gather_input``, once for all the layers that read it."""

    def __init__(self, in_features: int, out_features: int, bias: bool, group: dist.ProcessGroup) -> None:
        super().__init__()
        rank, size = dist.get_rank(group), dist.get_world_size(group)
        local = _divide(out_features, size, "output features")
        self.weight = mark_shard(nn.Parameter(torch.empty(local, in_features)), 0, rank, size)
        self.bias = mark_shard(nn.Parameter(torch.zeros(local)), 0, rank, size) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return with_adapter(self, x, F.linear(x, self.weight, self.bias))


class RowParallelLinear(nn.Module):
    """This rank's block of input features; the ranks' partial outputs are summed (and,
    with sequence parallelism, left split over the sequence)."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool, group: dist.ProcessGroup, sequence_parallel: bool
    ) -> None:
        super().__init__()
        self.group = group
        self.sequence_parallel = sequence_parallel
        rank, size = dist.get_rank(group), dist.get_world_size(group)
        local = _divide(in_features, size, "input features")
        self.weight = mark_shard(nn.Parameter(torch.empty(out_features, local)), 1, rank, size)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None  # added once, after the sum

    def forward(self, x: Tensor) -> Tensor:
        partial = with_adapter(self, x, F.linear(x, self.weight))  # the adapter's part joins the sum
        if not self.sequence_parallel:
            out = _ReduceFromTensorParallel.apply(partial, self.group)
            return out if self.bias is None else out + self.bias
        out = _ReduceScatterSequence.apply(partial, self.group)
        return out if self.bias is None else out + summed_gradient(self.bias, self.group)


class VocabParallelEmbedding(nn.Module):
    """Each rank holds a contiguous block of the vocabulary's rows; a token's vector comes
    from the rank that holds its row (the others contribute zeros to the sum, which with
    sequence parallelism is a reduce-scatter)."""

    def __init__(self, num_embeddings: int, dim: int, group: dist.ProcessGroup, sequence_parallel: bool) -> None:
        super().__init__()
        self.group = group
        self.sequence_parallel = sequence_parallel
        rank, size = dist.get_rank(group), dist.get_world_size(group)
        local = _divide(num_embeddings, size, "padded vocabulary size")
        self.start = rank * local
        self.weight = mark_shard(nn.Parameter(torch.empty(local, dim)), 0, rank, size)

    def forward(self, ids: Tensor) -> Tensor:
        local_ids = ids - self.start
        outside = (local_ids < 0) | (local_ids >= self.weight.shape[0])
        vectors = F.embedding(local_ids.masked_fill(outside, 0), self.weight)
        vectors = vectors.masked_fill(outside[..., None], 0.0)
        if self.sequence_parallel:
            return _ReduceScatterSequence.apply(vectors, self.group)
        return _ReduceFromTensorParallel.apply(vectors, self.group)


class SequenceParallelRMSNorm(nn.RMSNorm):
    """RMSNorm on this rank's sequence shard; its weight's gradient sums over the ranks."""

    def __init__(self, dim: int, eps: float, group: dist.ProcessGroup) -> None:
        super().__init__(dim, eps=eps)
        self.group = group

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, self.normalized_shape, summed_gradient(self.weight, self.group), self.eps)


class SequenceParallelLayerNorm(nn.LayerNorm):
    """LayerNorm on this rank's sequence shard; its weight's and bias's gradients sum over
    the ranks."""

    def __init__(self, dim: int, eps: float, bias: bool, group: dist.ProcessGroup) -> None:
        super().__init__(dim, eps=eps, bias=bias)
        self.group = group

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = summed_gradient(self.weight, self.group), summed_gradient(self.bias, self.group)
        return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)


class SequenceParallelDropout(nn.Dropout):
    """Dropout of this rank's sequence shard: the mask of the whole sequence is drawn (the
    tensor-parallel ranks' generators agree) and the shard's part kept, so the shards' masks
    are not copies of one another and, on the CPU, equal one process's mask exactly."""

    def __init__(self, p: float, group: dist.ProcessGroup) -> None:
        super().__init__(p)
        self.group = group

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        size = dist.get_world_size(self.group)
        whole = list(x.shape)
        whole[SEQUENCE_DIM] *= size
        # As F.dropout on the CPU: a Bernoulli(1 - p) tensor like the input, scaled by 1/(1 - p).
        mask = x.new_empty(whole).bernoulli_(1.0 - self.p)
        # A new tensor of the shard's size: the whole mask is not kept for the backward.
        shard = mask.chunk(size, dim=SEQUENCE_DIM)[dist.get_rank(self.group)].div(1.0 - self.p)
        return x * shard


class TensorParallelLayers(LayerFactory):
    def __init__(self, group: dist.ProcessGroup, sequence_parallel: bool = False) -> None:
        self.group = group
        self.tp_size = dist.get_world_size(group)
        self.sequence_parallel = sequence_parallel

    def column(self, in_features: int, out_features: int, bias: bool) -> nn.Module:
        return ColumnParallelLinear(in_features, out_features, bias, self.group)

    def row(self, in_features: int, out_features: int, bias: bool) -> nn.Module:
        return RowParallelLinear(in_features, out_features, bias, self.group, self.sequence_parallel)

    def embedding(self, num_embeddings: int, dim: int) -> nn.Module:
        return VocabParallelEmbedding(num_embeddings, dim, self.group, self.sequence_parallel)

    def norm(self, cfg: ModelConfig) -> nn.Module:
        if not self.sequence_parallel:
            return super().norm(cfg)
        if cfg.norm is Norm.rmsnorm:
            return SequenceParallelRMSNorm(cfg.d_model, cfg.norm_eps, self.group)
        return SequenceParallelLayerNorm(cfg.d_model, cfg.norm_eps, cfg.bias, self.group)

    def dropout(self, p: float) -> nn.Module:
        return SequenceParallelDropout(p, self.group) if self.sequence_parallel else super().dropout(p)

    def split_rng(self) -> ContextManager[None]:
        return rng.fork()

    checkpoint_contexts = staticmethod(rng.recompute_contexts)

    def gather_input(self, x: Tensor) -> Tensor:
        if self.sequence_parallel:
            return _GatherSequence.apply(x, self.group)
        return _CopyToTensorParallel.apply(x, self.group)

    def scatter_sequence(self, x: Tensor) -> Tensor:
        return _ScatterSequence.apply(x, self.group) if self.sequence_parallel else x

    def token_losses(self, logits: Tensor, labels: Tensor) -> Tensor:
        return token_losses(logits, labels, self.group)
