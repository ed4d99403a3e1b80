"""Connected components over duplicate pairs only: memory follows the pairs, not the corpus.

Documents are uint64 codes that sort in the global document order, so a cluster's survivor,
its earliest document, is its smallest code.

A shard of the pairs reduces to its forest: one (removed, survivor) row per removed document of
the shard's clusters. The union of the shards' forests has the same clusters and the same
smallest documents as the union of their pairs, so clusters can be found per shard and the
(smaller) forests merged afterwards, with the same result as over all pairs at once."""

from __future__ import annotations

from typing import Iterable

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

# forest rows gathered before they are merged into the forest so far: merging costs ~100 bytes
# per row (scipy's graph), so this bounds the batch part of the merge at ~25 MB
_MERGE_ROWS = 1 << 18


def removals(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(removed documents, the survivor each duplicates), sorted by removed document, for
    pairs of document codes of shape (k, 2)."""
    if not len(pairs):
        empty = np.empty(0, dtype=pairs.dtype)
        return empty, empty
    nodes, ends = np.unique(pairs, return_inverse=True)  # nodes sorted: index order = document order
    ends = ends.reshape(-1, 2)
    graph = coo_matrix((np.ones(len(ends), dtype=np.int8), (ends[:, 0], ends[:, 1])), shape=(len(nodes), len(nodes)))
    count, label = connected_components(graph, directed=False)
    first_index = np.full(count, len(nodes), dtype=np.int64)
    np.minimum.at(first_index, label, np.arange(len(nodes)))
    survivor = nodes[first_index[label]]
    removed = survivor != nodes
    return nodes[removed], survivor[removed]


def forest(pairs: np.ndarray) -> np.ndarray:
    """The pairs' clusters as (removed, survivor) rows, shape (k, 2), sorted by removed document."""
    return np.stack(removals(pairs), axis=1)


def merged_forest(forests: Iterable[np.ndarray]) -> np.ndarray:
    """The forest of the union of several forests (or pair shards). Pieces are merged into the
    forest so far whenever they outgrow it, so memory stays near twice the merged forest, whatever
    the number of pieces."""
    merged, pieces, pending = np.empty((0, 2), dtype=np.uint64), [], 0
    for piece in forests:
        pieces.append(piece)
        pending += len(piece)
        if pending > max(len(merged), _MERGE_ROWS):
            merged, pieces, pending = forest(np.concatenate([merged, *pieces])), [], 0
    return forest(np.concatenate([merged, *pieces])) if pieces else merged
