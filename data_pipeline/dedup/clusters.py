"""Duplicate clusters from LSH band keys and exact hashes: candidate pairs by numpy sorting,
optionally verified on full MinHash signatures, merged with union-find."""

import numpy as np

from data_pipeline.dedup.minhash import estimate_jaccard
from data_pipeline.dedup.union_find import UnionFind

# rows of signatures compared at once when verifying: bounds the temporary (pairs x perms) array
_VERIFY_CHUNK = 65536


def _pairs_sharing_key(keys: np.ndarray) -> np.ndarray:
    """(first, other) row pairs for rows with equal keys (shape (n, words per key)), linking every
    row of a group to the group's smallest row: enough for union-find."""
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


def _exact_pairs(exact_hashes: list[bytes]) -> np.ndarray:
    # exact_hash digests are 16 bytes: a key of two uint64 words
    words = np.frombuffer(b"".join(exact_hashes), dtype=np.uint64).reshape(len(exact_hashes), 2)
    return _pairs_sharing_key(words)


def _similar_enough(pairs: np.ndarray, signatures: np.ndarray, min_jaccard: float) -> np.ndarray:
    keep = np.empty(len(pairs), dtype=bool)
    for start in range(0, len(pairs), _VERIFY_CHUNK):
        chunk = pairs[start : start + _VERIFY_CHUNK]
        keep[start : start + len(chunk)] = estimate_jaccard(signatures[chunk[:, 0]], signatures[chunk[:, 1]]) >= min_jaccard
    return keep


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
    num_rows, num_bands = band_hashes.shape
    band_pairs = np.concatenate(
        [np.empty((0, 2), dtype=np.int64)] + [_pairs_sharing_key(band_hashes[:, band : band + 1]) for band in range(num_bands)]
    )
    # a pair found in several bands is verified and merged once
    pair_codes = np.unique(band_pairs[:, 0] * num_rows + band_pairs[:, 1])
    pairs = np.stack(np.divmod(pair_codes, num_rows), axis=1)
    if signatures is not None:
        pairs = pairs[_similar_enough(pairs, signatures, min_jaccard)]
    if exact_hashes is not None:
        if len(exact_hashes) != num_rows:
            raise ValueError(f"{len(exact_hashes)} exact hashes for {num_rows} rows")
        pairs = np.concatenate((pairs, _exact_pairs(exact_hashes)))
    clusters = UnionFind(num_rows)
    clusters.union_pairs(pairs)
    members = np.unique(pairs)
    roots = clusters.roots(members)
    smallest_of_root = np.full(num_rows, num_rows, dtype=np.int64)
    np.minimum.at(smallest_of_root, roots, members)
    duplicate_of = np.full(num_rows, -1, dtype=np.int64)
    duplicate_of[members] = smallest_of_root[roots]
    duplicate_of[duplicate_of == np.arange(num_rows)] = -1
    return duplicate_of
