"""One partition of the keys: merge every unit's sorted runs for it, emit candidate pairs
(documents sharing a band key, or an exact hash), verify band candidates on the signatures (read
by row). Memory follows the partition's share of the records, not the corpus nor the number of
input units."""

from __future__ import annotations

import numpy as np

from data_pipeline.dedup.clusters import pairs_sharing_key, verified
from data_pipeline.dedup.keys import RECORDS, KeyStore


def partition_records(store: KeyStore, units: list[int], kind: str, partition: int) -> np.ndarray:
    """Every unit's records of one partition, in document order (units, then rows, ascend)."""
    slices = [piece for unit in units for piece in store.unit(unit).partition_slices(kind, partition)]
    merged = np.empty(sum(piece.count for piece in slices), dtype=RECORDS[kind])
    position = 0
    for piece in slices:  # straight into one array: no copy of the pieces held beside it
        piece.read_into(merged[position : position + piece.count])
        position += piece.count
    return merged[np.argsort(merged["doc"], kind="stable")]


def _pairs_of_groups(records: np.ndarray, key_fields: tuple[str, str]) -> np.ndarray:
    """Document pairs linking every record of an equal key to the key's earliest document."""
    if len(records) < 2:
        return np.empty((0, 2), dtype=np.uint64)
    keys = np.stack([np.asarray(records[name], dtype=np.uint64) for name in key_fields], axis=1)
    rows = pairs_sharing_key(keys)  # rows in document order: the first of a group is the earliest
    return np.unique(np.asarray(records["doc"], dtype=np.uint64)[rows], axis=0)


def partition_pairs(
    store: KeyStore, units: list[int], partition: int, near: bool, exact: bool, min_jaccard: float
) -> tuple[dict[str, np.ndarray], int]:
    """Verified near-duplicate pairs and exact-duplicate pairs of one partition, and the number
    of band candidates that were verified."""
    found, candidates = {}, np.empty((0, 2), dtype=np.uint64)
    if near:
        candidates = _pairs_of_groups(partition_records(store, units, "bands", partition), ("band", "key"))
        found["near"] = verified(candidates, store.signatures, min_jaccard)
    if exact:
        found["exact"] = _pairs_of_groups(partition_records(store, units, "exact", partition), ("high", "low"))
    return found, len(candidates)
