"""Context parallelism: every sequence split over the ranks of a context-parallel (CP) group.

Each rank holds 1/cp of every sequence: its inputs, its activations and its share of the
loss. Causal attention does more work late in a sequence than early, so the sequence is cut
into 2·cp chunks and rank i holds chunks i and 2·cp−1−i (Megatron-LM's load balancing for
context parallelism): every rank then has as many (query, key) pairs under the causal mask.

Attention all-gathers the keys and values of the whole sequence over the group, as the Llama
3 paper does (Dubey et al. 2024, §3.3.2), and reorders them to global positions; its backward
is a reduce-scatter of their gradients. The queries stay local, so the mask is built for
local queries × global keys from each token's global position (causal, document and prefix
masks alike). A ring with log-sum-exp merging would overlap transfers with compute, but
needs a per-block mask and merge for every mask kind; docs/performance.md says why the
gather was chosen.

Rank order is [pp][dp][cp][tp]: DeepSpeed's grid sees dp × cp data-parallel ranks (cp
fastest), which average gradients and share ZeRO's shards; the cp ranks of one data-parallel
replica read the same samples and each keeps its chunks.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from pretrain.model.gpt import AttentionMode
from pretrain.objectives.base import Batch

if TYPE_CHECKING:  # pretrain.config imports the objectives, which import this package's users
    from pretrain.config import TrainConfig


def chunk_positions(seq_len: int, size: int, rank: int) -> Tensor:
    """Global positions of the tokens rank ``rank`` of ``size`` holds: chunks ``rank`` and
    ``2·size − 1 − rank`` of the sequence cut into ``2·size``."""
    chunk = seq_len // (2 * size)
    first, second = rank * chunk, (2 * size - 1 - rank) * chunk
    return torch.cat((torch.arange(first, first + chunk), torch.arange(second, second + chunk)))


class _GatherKeysValues(torch.autograd.Function):
    """Keys and values of every rank's chunks, in global order; the gradient of each rank's
    chunks is summed over the ranks whose queries read them (one reduce-scatter)."""

    @staticmethod
    def forward(ctx, k: Tensor, v: Tensor, context: ContextParallel) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        # (batch, heads, local, head_dim) -> (local, 2, batch, heads, head_dim): the collective
        # concatenates along dim 0, so the sequence goes first; one copy stacks k and v.
        local = torch.stack((k.permute(2, 0, 1, 3), v.permute(2, 0, 1, 3)), dim=1)
        gathered = local.new_empty((context.size * local.shape[0], *local.shape[1:]))
        dist.all_gather_single(gathered, local, group=context.group)
        ctx.context = context
        whole = gathered.index_select(0, context.to_global(k.shape[2], k.device))  # global order
        return whole[:, 0].permute(1, 2, 0, 3), whole[:, 1].permute(1, 2, 0, 3)

    @staticmethod
    def backward(ctx, grad_k: Tensor, grad_v: Tensor) -> tuple[Tensor, Tensor, None]:  # type: ignore[override]
        context: ContextParallel = ctx.context
        whole = torch.stack((grad_k.permute(2, 0, 1, 3), grad_v.permute(2, 0, 1, 3)), dim=1)
        local_len = whole.shape[0] // context.size
        by_rank = whole.index_select(0, context.rank_major(local_len * context.size, whole.device))
        mine = by_rank.new_empty((local_len, *by_rank.shape[1:]))
        dist.reduce_scatter_single(mine, by_rank, group=context.group)
        return mine[:, 0].permute(1, 2, 0, 3), mine[:, 1].permute(1, 2, 0, 3), None


def _padded(batch: Batch, extra: int) -> Batch:
    """``batch`` with ``extra`` positions appended that neither score nor are seen."""
    if extra == 0:
        return batch
    if batch.attention.mode is AttentionMode.bidirectional:
        raise ValueError(
            f"bidirectional attention over {batch.input_ids.shape[1]} tokens cannot be padded to 2·cp chunks; "
            "choose a train.seq_len divisible by 2·parallel.cp"
        )
    pad = lambda t: F.pad(t, (0, extra))  # noqa: E731
    doc_ids = batch.attention.doc_ids
    if doc_ids is not None:
        doc_ids = torch.cat((doc_ids, doc_ids[:, -1:].expand(-1, extra)), dim=1)
    return Batch(
        pad(batch.input_ids), pad(batch.labels), pad(batch.loss_mask), replace(batch.attention, doc_ids=doc_ids)
    )


class ContextParallel:
    """This rank's place in its context-parallel group, and what the model, the batches and
    the loss do differently there. ``pretrain.model.gpt`` reaches it as ``LayerFactory.context``."""

    def __init__(self, group: dist.ProcessGroup) -> None:
        self.group = group
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self._orders: dict[tuple[int, torch.device], tuple[Tensor, Tensor]] = {}

    def positions(self, seq_len: int) -> Tensor:
        """Global positions of this rank's tokens, (seq_len / cp,)."""
        return chunk_positions(seq_len, self.size, self.rank)

    def _order(self, seq_len: int, device: torch.device) -> tuple[Tensor, Tensor]:
        key = (seq_len, device)
        if key not in self._orders:
            rank_major = torch.cat([chunk_positions(seq_len, self.size, r) for r in range(self.size)]).to(device)
            self._orders[key] = rank_major, torch.argsort(rank_major)
        return self._orders[key]

    def rank_major(self, seq_len: int, device: torch.device) -> Tensor:
        """Global position of each token of the ranks' chunks laid end to end in rank order."""
        return self._order(seq_len, device)[0]

    def to_global(self, local_len: int, device: torch.device) -> Tensor:
        """Where, in the gathered rank-order sequence, each global position lies."""
        return self._order(local_len * self.size, device)[1]

    def gather_keys_values(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """(batch, kv_heads, seq / cp, head_dim) each -> the whole sequence's, in global order."""
        return _GatherKeysValues.apply(k, v, self)

    def local_batch(self, batch: Batch) -> Batch:
        """This rank's tokens of a whole batch (every cp rank builds the same one). Document
        ids and prefix lengths stay whole: the mask compares the local queries' global
        positions with every key's. A sequence whose length does not divide into 2·cp chunks
        (span corruption's are up to a few tokens short of train.seq_len) is padded at its
        end with tokens outside the loss that no earlier position attends to (causal)."""
        batch = _padded(batch, -batch.input_ids.shape[1] % (2 * self.size))
        positions = self.positions(batch.input_ids.shape[1]).to(batch.input_ids.device)
        return Batch(
            input_ids=batch.input_ids[:, positions],
            labels=batch.labels[:, positions],
            loss_mask=batch.loss_mask[:, positions],
            attention=replace(batch.attention, query_positions=positions),
        )

    def sample_mean_loss(self, token_losses: Tensor, loss_mask: Tensor) -> Tensor:
        """``pretrain.model.loss.sample_mean_loss`` of the whole sequences, from this rank's
        tokens: each sample's masked loss sum here over its token count on all ranks (one
        all-reduce of (batch,) counts), times cp. The cp ranks' values then average (over the
        dp × cp ranks DeepSpeed averages gradients over) to the batch's loss, as data-parallel
        replicas' do, and their gradients sum to its gradient."""
        mask = loss_mask.to(token_losses.dtype)
        counts = mask.sum(dim=1)
        dist.all_reduce(counts, group=self.group)
        per_sample = (token_losses * mask).sum(dim=1) / counts.clamp(min=1.0)
        return per_sample.mean() * self.size


def context_parallel(grid: Any, cp: int) -> Optional[ContextParallel]:
    """This rank's context-parallel group (None without cp): runs of ``cp`` consecutive ranks
    of each data-parallel group. Every rank creates every group, in the same order."""
    if cp == 1:
        return None
    mine = None
    for data_ranks in grid.topology().get_axis_comm_lists("data"):
        for start in range(0, len(data_ranks), cp):
            ranks = data_ranks[start : start + cp]
            group = dist.new_group(ranks)
            if dist.get_rank() in ranks:
                mine = ContextParallel(group)
    assert mine is not None and mine.rank == grid.get_data_parallel_rank() % cp
    return mine


def check_context_parallel(cfg: TrainConfig) -> None:
    """One clear error for what context parallelism does not support (cfg.parallel.cp > 1)."""
    par, seq_len = cfg.parallel, cfg.train.seq_len
    if par.pp > 1:
        raise ValueError(
            f"parallel.cp={par.cp} with parallel.pp={par.pp}: context parallelism does not run under DeepSpeed's "
            "pipeline engine yet; set parallel.pp=1 (use tp and ZeRO for the parameters)"
        )
    if seq_len % (2 * par.cp):
        raise ValueError(
            f"parallel.cp={par.cp} cuts each sequence into 2·cp = {2 * par.cp} chunks, but train.seq_len={seq_len} "
            f"is not divisible by it; choose a multiple of {2 * par.cp}"
        )
    if par.sequence_parallel and (seq_len // par.cp) % par.tp:
        raise ValueError(
            f"parallel.sequence_parallel=true splits each rank's {seq_len // par.cp} tokens (train.seq_len / "
            f"parallel.cp) over parallel.tp={par.tp} ranks; choose a train.seq_len divisible by {par.cp * par.tp}"
        )
    if cfg.train.eval_tasks:
        raise ValueError(
            f"train.eval_tasks with parallel.cp={par.cp}: the tasks score whole sequences on each rank; run "
            "pretrain.evaluate on the checkpoints instead, or set parallel.cp=1"
        )
