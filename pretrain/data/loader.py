"""From global sample positions to the token windows each rank trains on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_pipeline.formats.token_shards import ShardError
from pretrain.data.megatron import MegatronTokens, is_megatron_prefix
from pretrain.data.order import BlendedOrder, ShuffledOrder
from pretrain.data.windows import PackedWindows


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step's global batch is cut: each data-parallel rank takes a
    contiguous slice of ``micro_batch · grad_accum`` positions, one micro-batch at a time.
    The global batch itself does not depend on the number of ranks."""

    micro_batch: int
    grad_accum: int
    dp_size: int

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.grad_accum * self.dp_size

    def positions(self, consumed_samples: int, micro_step: int, dp_rank: int) -> np.ndarray:
        """Positions of one micro-batch of the global batch that starts after
        ``consumed_samples`` samples."""
        start = consumed_samples + (dp_rank * self.grad_accum + micro_step) * self.micro_batch
        return np.arange(start, start + self.micro_batch, dtype=np.int64)


@dataclass
class SampleBatch:
    windows: np.ndarray  # (batch, window) int64
    positions: np.ndarray  # global positions: unique per drawn sample, seed its noise
    sources: np.ndarray  # which data source each window came from
    window_ids: np.ndarray  # the window's index within its source


class TrainingStream:
    """Training windows of one or more sources in their global, blended, shuffled order."""

    def __init__(self, sources: list[PackedWindows], weights: list[float], seed: int) -> None:
        if len(sources) != len(weights):
            raise ValueError("one weight per data source")
        self.sources = sources
        self._orders = [ShuffledOrder(len(source), seed + index) for index, source in enumerate(sources)]
        self._blend = BlendedOrder(weights, seed) if len(sources) > 1 else None

    def sample(self, positions: np.ndarray) -> SampleBatch:
        sources = np.zeros(len(positions), dtype=np.int64)
        window_ids = np.empty(len(positions), dtype=np.int64)
        for row, position in enumerate(positions):
            source, source_position = (0, int(position)) if self._blend is None else self._blend[int(position)]
            sources[row] = source
            window_ids[row] = self._orders[source][source_position]
        windows = np.stack([self.sources[s][int(w)] for s, w in zip(sources, window_ids)]).astype(np.int64)
        return SampleBatch(windows=windows, positions=positions, sources=sources, window_ids=window_ids)


class ValidationSet:
    """Validation windows of all sources, in a fixed order (no shuffling), so every
    evaluation scores the same samples."""

    def __init__(self, sources: list[PackedWindows]) -> None:
        self.sources = [source for source in sources if len(source)]
        self._starts = np.cumsum([0] + [len(source) for source in self.sources])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def windows(self, positions: np.ndarray) -> np.ndarray:
        rows = []
        for position in positions:
            source = int(np.searchsorted(self._starts, position, side="right")) - 1
            rows.append(self.sources[source][int(position - self._starts[source])])
        return np.stack(rows).astype(np.int64)


def open_source(
    path: str | Path, split: str, window: int, tokenizer_hash: str | None, loss_mask: bool = False
) -> PackedWindows:
    """A directory of our token shards, or the prefix of a Megatron .bin/.idx pair (which has
    no splits and carries no tokenizer hash: all of it is read, whatever ``split`` asks).
    ``loss_mask``: chat shards, whose windows carry their loss masks (objective=sft)."""
    if is_megatron_prefix(path):
        if loss_mask:
            raise ShardError(
                f"data.path={path}: a Megatron pair has no loss mask; "
                "objective=sft trains on `tokenize format=chat` output"
            )
        return PackedWindows([MegatronTokens(path)], window)
    return PackedWindows.open(path, split, window, tokenizer_hash, loss_mask)


def open_sources(
    paths: list[str | Path], split: str, window: int, tokenizer_hash: str | None, loss_mask: bool = False
) -> list[PackedWindows]:
    return [open_source(path, split, window, tokenizer_hash, loss_mask) for path in paths]
