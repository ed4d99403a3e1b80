"""Stages 2 and 3 of dedup, between filter and write.

buckets   one unit per key partition: verified duplicate pairs of that partition, reduced to the
          forest of their clusters (one (removed, survivor) row per removed document)
clusters  one unit: the partitions' forests merged, in memory up to dedup.cluster_rows rows,
          else on disk in bounded memory (dedup/disk_components.py), then each input unit's
          removal list (removed document, survivor), survivor = earliest document
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from data_pipeline.curate.config import CurateConfig
from data_pipeline.curate.output_dir import CurateOutputDir
from data_pipeline.dedup.buckets import partition_pairs
from data_pipeline.dedup.components import forest, merged_forest
from data_pipeline.dedup.disk_components import DiskComponents, append_grouped, read_chunks
from data_pipeline.dedup.keys import KeyStore, npy_header, unit_of
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
    layout = CurateOutputDir(config.output_dir)
    store = KeyStore(layout.keys, permutations)
    dedup = config.dedup
    found, candidates = partition_pairs(
        store, units, partition.index, dedup.near, dedup.exact, dedup.minhash.min_jaccard
    )
    clusters = forest(np.concatenate([np.empty((0, 2), dtype=np.uint64), *found.values()]))
    atomic_write_bytes(layout.forest(partition.key), _serialized(lambda buffer: np.save(buffer, clusters)))
    return {"near_candidates": candidates, "forest_rows": len(clusters)} | {
        f"{kind}_pairs": len(pairs) for kind, pairs in found.items()
    }


def clusters_unit(_: SingleUnit, config: CurateConfig, partitions: int) -> dict[str, Any]:
    """Merge the partitions' forests in memory, or on disk when they hold more than
    ``dedup.cluster_rows`` rows; either way each unit's removal list, byte for byte the same."""
    layout = CurateOutputDir(config.output_dir)
    shutil.rmtree(layout.components, ignore_errors=True)  # an earlier attempt's scratch, whichever way it went
    forests = {path: _npy_layout(path) for path in (layout.forest(PartitionUnit(p).key) for p in range(partitions))}
    total_rows = sum(shape[0] for shape, _ in forests.values())
    budget = config.dedup.cluster_rows
    if total_rows <= budget:
        merged = merged_forest(np.load(path) for path in forests)
        units = unit_of(merged[:, 0])
        starts = (
            np.flatnonzero(np.concatenate(([True], units[1:] != units[:-1])))
            if len(units)
            else np.empty(0, dtype=np.int64)
        )
        for start, stop in zip(starts.tolist(), starts[1:].tolist() + [len(units)]):
            _publish_removals(layout, unit_key(units[start]), merged[start:stop])
        return {
            "removed": int(len(merged)),
            "units_with_removals": int(len(starts)),
            "on_disk": False,
            "disk_steps": 0,
            "disk_partitions": 0,
        }
    try:
        return _clusters_on_disk(layout, forests, total_rows, budget)
    finally:  # the scratch can be tens of GB: never left behind, also when the unit fails
        shutil.rmtree(layout.components, ignore_errors=True)


def _clusters_on_disk(
    layout: CurateOutputDir, forests: dict[Path, tuple[tuple[int, ...], int]], total_rows: int, budget: int
) -> dict[str, Any]:
    """`forests`: each forest file's shape and where its data begins."""
    components = DiskComponents(layout.components, budget, edges=total_rows)
    for path, (_, data_start) in forests.items():
        for rows in read_chunks(path, budget, 2, header=data_start):
            components.add(rows)
    components.solve()
    by_unit = layout.components / "units"
    by_unit.mkdir()
    removed = 0
    for rows in components.removals():  # shuffled into one file per input unit, then each sorted alone
        append_grouped(rows, unit_of(rows[:, 0]), lambda unit: by_unit / f"{unit_key(unit)}.bin")
        removed += len(rows)
    unit_files = sorted(by_unit.iterdir())
    for path in unit_files:
        rows = np.fromfile(path, dtype=np.uint64).reshape(-1, 2)
        _publish_removals(layout, path.stem, rows[np.argsort(rows[:, 0])])
    return {
        "removed": removed,
        "units_with_removals": len(unit_files),
        "on_disk": True,
        "disk_steps": components.steps,
        "disk_partitions": components.partitions,
    }


def _npy_layout(path: Path) -> tuple[tuple[int, ...], int]:
    """A .npy file's shape and where its data begins."""
    with open(path, "rb") as file:
        shape, _ = npy_header(file)
        return shape, file.tell()


def _publish_removals(layout: CurateOutputDir, unit: str, rows: np.ndarray) -> None:
    atomic_write_bytes(layout.removals(unit), _serialized(lambda buffer: np.save(buffer, rows)))


def _serialized(save: Callable[[io.BytesIO], None]) -> bytes:
    """What numpy's save writes, as bytes to publish atomically."""
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getvalue()
