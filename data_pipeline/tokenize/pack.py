"""Stage 2, one job per output shard: a split is one token stream (its units' runs in unit
order) cut into shards of exactly ``tokens_per_shard`` tokens, the last one shorter. Shard k
copies its token range out of the runs (memory-mapped) with the document ends inside it,
so the shards do not depend on how many units or workers made the runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from data_pipeline.formats.token_shards import TokenShard, TokenShardWriter
from data_pipeline.tokenize.output_dir import SPLITS, TRAIN, VAL, VAL_FALLBACK_DOCUMENTS, TokenizeOutputDir

if TYPE_CHECKING:  # only named in hints: a pack worker need not import the readers
    from data_pipeline.io.units import InputUnit

# A corpus of at least this many documents whose id hashes sent none to val still gets a
# val split: its documents of smallest hash, one per MIN_DOCUMENTS_FOR_VAL documents (at
# most VAL_FALLBACK_DOCUMENTS).
MIN_DOCUMENTS_FOR_VAL = 10


@dataclass(frozen=True)
class Segment:
    """Tokens [start, stop) of one run, a piece of a split's stream."""

    run: Path
    start: int
    stop: int

    @property
    def num_tokens(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class ShardUnit:
    """Output shard ``index`` of ``split``: the concatenation of ``pieces``."""

    split: str
    index: int
    pieces: tuple[Segment, ...]

    @property
    def key(self) -> str:
        return f"{self.split}-{self.index:05d}"

    def __str__(self) -> str:
        return self.key


def split_streams(
    units: Sequence[InputUnit], stats: Sequence[dict[str, Any]], layout: TokenizeOutputDir, val_fraction: float
) -> tuple[dict[str, list[Segment]], list[Segment]]:
    """Each split's stream as run segments in unit order, from the units' markers; and the
    train documents given to an empty val split, if any."""
    streams = {
        split: [
            Segment(layout.run_prefix(split, unit.index), 0, unit_stats["tokens"][split])
            for unit, unit_stats in zip(units, stats)
        ]
        for split in SPLITS
    }
    documents = sum(sum(unit_stats["documents"].values()) for unit_stats in stats)
    val_documents = sum(unit_stats["documents"][VAL] for unit_stats in stats)
    promoted: list[Segment] = []
    if val_fraction > 0 and val_documents == 0 and documents >= MIN_DOCUMENTS_FOR_VAL:
        # the smallest hashes, the earliest document among equal ones: the same for any units
        candidates = sorted(
            (hashed, position, start, stop)
            for position, unit_stats in enumerate(stats)
            for hashed, start, stop in unit_stats["smallest_train_hashes"]
        )
        chosen = sorted(
            candidate[1:] for candidate in candidates[: min(VAL_FALLBACK_DOCUMENTS, documents // MIN_DOCUMENTS_FOR_VAL)]
        )
        promoted = [Segment(streams[TRAIN][position].run, start, stop) for position, start, stop in chosen]
        streams[VAL] = promoted
        for position in sorted({position for position, _, _ in chosen}, reverse=True):
            run, end = streams[TRAIN][position].run, streams[TRAIN][position].stop
            cuts = [(start, stop) for where, start, stop in chosen if where == position]
            starts, stops = [0] + [stop for _, stop in cuts], [start for start, _ in cuts] + [end]
            streams[TRAIN][position : position + 1] = [Segment(run, a, b) for a, b in zip(starts, stops)]
    return {split: [segment for segment in stream if segment.num_tokens] for split, stream in streams.items()}, promoted


def plan_shards(split: str, stream: Sequence[Segment], tokens_per_shard: int) -> list[ShardUnit]:
    """The stream cut into shards of tokens_per_shard tokens (the last one shorter)."""
    shards: list[ShardUnit] = []
    pieces: list[Segment] = []
    room = tokens_per_shard
    for segment in stream:
        start = segment.start
        while start < segment.stop:
            stop = min(segment.stop, start + room)
            pieces.append(Segment(segment.run, start, stop))
            room -= stop - start
            start = stop
            if room == 0:
                shards.append(ShardUnit(split, len(shards), tuple(pieces)))
                pieces, room = [], tokens_per_shard
    if pieces:
        shards.append(ShardUnit(split, len(shards), tuple(pieces)))
    return shards


def document_ends(offsets: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Where the documents (or their pieces) of tokens [start, stop) of a run end, counted
    from start: every document end inside the range, and the range's own end. Binary search
    on the (memory-mapped, sorted) offsets reads only the range's part of them."""
    first, last = np.searchsorted(offsets, start, side="right"), np.searchsorted(offsets, stop, side="left")
    inside = np.asarray(offsets[first:last], dtype=np.int64)
    return np.append(inside, stop) - start


def pack_shard(
    unit: ShardUnit, output_dir: str, vocab_size: int, tokenizer_hash: str, loss_mask: bool = False
) -> dict[str, Any]:
    """Write one output shard from its pieces (and their loss masks: chat runs); returns its
    size (the unit's marker)."""
    prefix = TokenizeOutputDir(output_dir).shard_prefix(unit.split, unit.index)
    with TokenShardWriter(prefix, vocab_size, tokenizer_hash, loss_mask=loss_mask) as writer:
        for piece in unit.pieces:
            run = TokenShard(piece.run, tokenizer_hash)
            ends = document_ends(run.offsets, piece.start, piece.stop)
            mask = None if run.mask is None else run.mask[piece.start : piece.stop]
            writer.add_packed(run.tokens[piece.start : piece.stop], ends, mask)
    return {"name": unit.key, "num_tokens": writer.num_tokens, "num_documents": writer.num_documents}
