"""Stages 2 and 3 of dedup, between filter and write.

buckets   one unit per key partition: verified duplicate pairs of that partition
clusters  one unit: connected components over all pairs (memory follows the pairs), then each
          input unit's removal list (removed document, survivor), survivor = earliest document
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from data_pipeline.curate.config import CurateConfig
from data_pipeline.curate.layout import Layout
from data_pipeline.dedup.buckets import partition_pairs
from data_pipeline.dedup.components import removals
from data_pipeline.dedup.keys import KeyStore, unit_of
from data_pipeline.io.units import unit_key
from data_pipeline.io.writers import atomic_write_bytes


@dataclass(frozen=True)
class PartitionUnit:
    index: int

    @property
    def key(self) -> str:
        return f"p{self.index:05d}"

    def __str__(self) -> str:
        return f"partition {self.index}"


@dataclass(frozen=True)
class SingleUnit:
    """The one unit of a stage that runs once (clusters, report)."""

    key: str = "all"

    def __str__(self) -> str:
        return self.key


def buckets_unit(partition: PartitionUnit, config: CurateConfig, units: list[int], permutations: int) -> dict[str, Any]:
    layout = Layout(config.output_dir)
    store = KeyStore(layout.keys, permutations)
    dedup = config.dedup
    found, candidates = partition_pairs(store, units, partition.index, dedup.near, dedup.exact, dedup.minhash.min_jaccard)
    atomic_write_bytes(layout.pairs(partition.key), _serialized(lambda buffer: np.savez(buffer, **found)))
    return {"near_candidates": candidates} | {f"{kind}_pairs": len(pairs) for kind, pairs in found.items()}


def clusters_unit(_: SingleUnit, config: CurateConfig, partitions: int) -> dict[str, Any]:
    layout = Layout(config.output_dir)
    pairs = _unique_pairs(layout, partitions)
    removed, survivors = removals(pairs)
    units = unit_of(removed)
    starts = np.flatnonzero(np.concatenate(([True], units[1:] != units[:-1]))) if len(units) else np.empty(0, dtype=np.int64)
    for start, stop in zip(starts.tolist(), starts[1:].tolist() + [len(units)]):
        rows = np.stack((removed[start:stop], survivors[start:stop]), axis=1)
        atomic_write_bytes(layout.removals(unit_key(units[start])), _serialized(lambda buffer: np.save(buffer, rows)))
    return {"pairs": int(len(pairs)), "removed": int(len(removed)), "units_with_removals": int(len(starts))}


def _unique_pairs(layout: Layout, partitions: int) -> np.ndarray:
    """Every partition's pairs, each pair once: a pair that collides in several bands was found
    in several partitions. Merged whenever the new pieces outgrow what is held, so memory stays
    near twice the unique pairs."""
    unique, pieces, pending = np.empty((0, 2), dtype=np.uint64), [], 0
    for partition in range(partitions):
        with np.load(layout.pairs(PartitionUnit(partition).key)) as found:
            new = [found[kind] for kind in ("near", "exact") if kind in found]
        pieces += new
        pending += sum(map(len, new))
        if pending > max(len(unique), 1 << 20) or partition == partitions - 1:
            unique = np.unique(np.concatenate([unique, *pieces]), axis=0)
            pieces, pending = [], 0
    return unique


def _serialized(save: Callable[[io.BytesIO], None]) -> bytes:
    """What numpy's save/savez write, as bytes to publish atomically."""
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getvalue()
