"""Stages 2 and 3 of dedup, between filter and write.

buckets   one unit per key partition: verified duplicate pairs of that partition, reduced to the
          forest of their clusters (one (removed, survivor) row per removed document)
clusters  one unit: the partitions' forests merged (memory follows the duplicate documents, not
          the pairs nor the corpus), then each input unit's removal list (removed document,
          survivor), survivor = earliest document
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from data_pipeline.curate.config import CurateConfig
from data_pipeline.curate.layout import Layout
from data_pipeline.dedup.buckets import partition_pairs
from data_pipeline.dedup.components import forest, merged_forest
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
    clusters = forest(np.concatenate([np.empty((0, 2), dtype=np.uint64), *found.values()]))
    atomic_write_bytes(layout.forest(partition.key), _serialized(lambda buffer: np.save(buffer, clusters)))
    return {"near_candidates": candidates, "forest_rows": len(clusters)} | {f"{kind}_pairs": len(pairs) for kind, pairs in found.items()}


def clusters_unit(_: SingleUnit, config: CurateConfig, partitions: int) -> dict[str, Any]:
    layout = Layout(config.output_dir)
    merged = merged_forest(np.load(layout.forest(PartitionUnit(partition).key)) for partition in range(partitions))
    units = unit_of(merged[:, 0])
    starts = np.flatnonzero(np.concatenate(([True], units[1:] != units[:-1]))) if len(units) else np.empty(0, dtype=np.int64)
    for start, stop in zip(starts.tolist(), starts[1:].tolist() + [len(units)]):
        rows = merged[start:stop]
        atomic_write_bytes(layout.removals(unit_key(units[start])), _serialized(lambda buffer: np.save(buffer, rows)))
    return {"removed": int(len(merged)), "units_with_removals": int(len(starts))}


def _serialized(save: Callable[[io.BytesIO], None]) -> bytes:
    """What numpy's save writes, as bytes to publish atomically."""
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getvalue()
