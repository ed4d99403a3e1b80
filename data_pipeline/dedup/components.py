"""Connected components over duplicate pairs only: memory follows the pairs, not the corpus.

Documents are uint64 codes that sort in the global document order, so a cluster's survivor,
its earliest document, is its smallest code."""
from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


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
