"""Disjoint sets over 0..n-1 with union by size and path compression (near-constant time per call)."""

import numpy as np


class UnionFind:
    def __init__(self, size: int) -> None:
        # Python lists: single-element access is several times faster than on numpy arrays
        self._parent = list(range(size))
        self._size = [1] * size

    def find(self, item: int) -> int:
        parent = self._parent
        root = item
        while parent[root] != root:
            root = parent[root]
        while parent[item] != root:  # path compression: point the whole path at the root
            parent[item], item = root, parent[item]
        return root

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a == root_b:
            return
        if self._size[root_a] < self._size[root_b]:
            root_a, root_b = root_b, root_a
        self._parent[root_b] = root_a
        self._size[root_a] += self._size[root_b]

    def union_pairs(self, pairs: np.ndarray) -> None:
        """Union every row (a, b) of an integer array of shape (k, 2)."""
        for a, b in pairs.tolist():
            self.union(a, b)

    def roots(self, items: np.ndarray) -> np.ndarray:
        return np.fromiter(map(self.find, items.tolist()), dtype=np.int64, count=len(items))
