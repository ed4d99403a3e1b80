"""Candidate pairs from LSH band keys and exact hashes (numpy sorting), verified on the full
MinHash signatures, and clusters of them. The sharded dedup stages run the same steps per
partition of keys (dedup/buckets.py); find_duplicates runs them in memory on one array."""

from typing import Callable

import numpy as np

from data_pipeline.dedup.components import removals
from data_pipeline.dedup.minhash import estimate_jaccard

# pairs verified at once: bounds the temporary (pairs x perms) arrays
_VERIFY_CHUNK = 65536


def pairs_sharing_key(keys: np.ndarray) -> np.ndarray:
    """(first, other) row pairs for rows with equal keys (shape (n, words per key)), linking every
    row of a group to the group's smallest row: enough for connected components."""
    if len(keys) < 2:
        return np.empty((0, 2), dtype=np.int64)
    order = np.lexsort(keys.T[::-1])  # stable: rows of a group stay in ascending order
    sorted_keys = keys[order]
    same_as_previous = np.all(sorted_keys[1:] == sorted_keys[:-1], axis=1)
    group_start = np.flatnonzero(np.concatenate(([True], ~same_as_previous)))
    group_of_position = np.cumsum(np.concatenate(([True], ~same_as_previous))) - 1
    others = np.flatnonzero(np.concatenate(([False], same_as_previous)))
    firsts = group_start[group_of_position[others]]
    return np.stack((order[firsts], order[others]), axis=1)


def verified(pairs: np.ndarray, signatures_of: Callable[[np.ndarray], np.ndarray], min_jaccard: float) -> np.ndarray:
    """The pairs whose signatures (looked up by `signatures_of`) estimate a Jaccard >= min_jaccard."""
    keep = np.empty(len(pairs), dtype=bool)
    for start in range(0, len(pairs), _VERIFY_CHUNK):
        chunk = pairs[start : start + _VERIFY_CHUNK]
        keep[start : start + len(chunk)] = (
            estimate_jaccard(signatures_of(chunk[:, 0]), signatures_of(chunk[:, 1])) >= min_jaccard
        )
    return pairs[keep]


def band_pairs(band_hashes: np.ndarray) -> np.ndarray:
    """Row pairs sharing a key in some band, each pair once."""
    per_band = [pairs_sharing_key(band_hashes[:, band : band + 1]) for band in range(band_hashes.shape[1])]
    return np.unique(np.concatenate([np.empty((0, 2), dtype=np.int64)] + per_band), axis=0)


def exact_words(exact_hashes: list[bytes]) -> np.ndarray:
    """16-byte exact_hash digests as keys of two uint64 words."""
    return np.frombuffer(b"".join(exact_hashes), dtype=np.uint64).reshape(len(exact_hashes), 2)


def find_duplicates(
    band_hashes: np.ndarray,
    exact_hashes: list[bytes] | None = None,
    signatures: np.ndarray | None = None,
    min_jaccard: float = 0.6,
) -> np.ndarray:
    """For each row, the row it duplicates (the smallest row of its cluster), or -1 if it is kept.

    Candidates are rows sharing a key in the same band, and rows with equal exact hashes. With
    `signatures` (the MinHash rows the band keys came from) a band candidate becomes a duplicate
    only when its estimated Jaccard with the pair's other row is >= `min_jaccard`; exact matches
    need no check. Each row of a shared key is checked against the key's smallest row only.
    """
    num_rows = len(band_hashes)
    pairs = band_pairs(band_hashes)
    if signatures is not None:
        pairs = verified(pairs, signatures.__getitem__, min_jaccard)
    if exact_hashes is not None:
        if len(exact_hashes) != num_rows:
            raise ValueError(f"{len(exact_hashes)} exact hashes for {num_rows} rows")
        pairs = np.concatenate((pairs, pairs_sharing_key(exact_words(exact_hashes))))
    removed, survivor = removals(pairs)
    duplicate_of = np.full(num_rows, -1, dtype=np.int64)
    duplicate_of[removed] = survivor
    return duplicate_of
