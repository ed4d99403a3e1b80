"""Connected components on disk, for more forest rows than one process should hold.

Used by the clusters unit when the buckets partitions' forests together exceed
``dedup.cluster_rows``; below it the in-memory merge (components.merged_forest) is faster.

Algorithm: Kiveris et al. 2014, "Connected Components in MapReduce and Beyond", alternating
large-star and small-star steps until every component is a star around its smallest node. Nodes
are document codes, so that node is the cluster's earliest document, the survivor, and the
leaves' (leaf, centre) edges are exactly the (removed, survivor) rows of the in-memory merge.

Why this design and why memory stays bounded:
- The undirected edges are stored as directed records (node, neighbour), both directions,
  hash-partitioned by node into raw files; a step reads one partition at a time, in chunks of
  ``rows`` records, and appends what it emits to the next step's partition files. The number
  of partitions is chosen so a partition holds ~0.8 ``rows`` records.
- Each step needs, per node, only the smallest and largest neighbour: a table of the
  partition's distinct nodes (built chunk by chunk), then a second pass over the chunks emits the
  new edges. So a node with millions of neighbours (one text copied a million times) costs one
  table row, not its neighbour list: memory is a chunk plus the table, whatever the skew.
- A step emits at most one edge per edge it reads (large-star: one per larger neighbour;
  small-star: one per smaller neighbour), so the files never outgrow the input. Repeated edges
  change neither the minima nor the result; those within a chunk are dropped as it is read.
- The graph is final when every node either has only larger neighbours (a centre) or exactly
  one distinct neighbour (a leaf): smallest neighbour > node or smallest == largest, read from
  the same table, so convergence costs no extra pass. The rounds are O(log^2 n) by the paper.

This runs as a single work unit with bounded memory. Each step's partitions are independent
(read one partition, append to the next step's), so they could become units of their own, but
the number of steps depends on the data and the executors run a fixed list of stages, so that
is left for later.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

_RECORD_WORDS = 2  # (node, neighbour), uint64 each
_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: codes of one unit spread over partitions


def partition_of(nodes: np.ndarray, partitions: int) -> np.ndarray:
    return ((nodes * _MIX) >> np.uint64(32)) % np.uint64(partitions)


def append_grouped(rows: np.ndarray, groups: np.ndarray, path_of: Callable[[int], Path]) -> None:
    """Append each group's rows (raw uint64) to its file, e.g. records to their partitions."""
    small = len(groups) and groups.max() < 2**16
    order = np.argsort(groups.astype(np.uint16) if small else groups, kind="stable")  # 16 bits: a radix sort
    rows, groups = rows[order], groups[order]
    starts = np.flatnonzero(np.concatenate(([True], groups[1:] != groups[:-1]))) if len(groups) else []
    for start, stop in zip(list(starts), list(starts[1:]) + [len(groups)]):
        with open(path_of(int(groups[start])), "ab") as file:
            file.write(np.ascontiguousarray(rows[start:stop], dtype=np.uint64).tobytes())


def read_chunks(path: Path, rows: int, width: int, header: int = 0) -> Iterator[np.ndarray]:
    """A raw uint64 file (after `header` bytes) of rows of `width` words, `rows` rows at a
    time, by positioned reads (none if the file is absent)."""
    if not path.exists():
        return
    total = (path.stat().st_size - header) // (8 * width)
    for start in range(0, total, rows):
        count = min(rows, total - start)
        yield np.fromfile(path, dtype=np.uint64, count=count * width, offset=header + start * width * 8).reshape(
            count, width
        )


class _NeighbourTable:
    """Per distinct node of a partition: its smallest and largest neighbour (sorted by node)."""

    def __init__(self) -> None:
        self.nodes = self.lowest = self.highest = np.empty(0, dtype=np.uint64)

    def add(self, nodes: np.ndarray, lowest: np.ndarray, highest: np.ndarray) -> None:
        nodes = np.concatenate((self.nodes, nodes))
        lowest, highest = np.concatenate((self.lowest, lowest)), np.concatenate((self.highest, highest))
        order = np.argsort(nodes, kind="stable")
        nodes, lowest, highest = nodes[order], lowest[order], highest[order]
        starts = (
            np.flatnonzero(np.concatenate(([True], nodes[1:] != nodes[:-1])))
            if len(nodes)
            else np.empty(0, dtype=np.int64)
        )
        self.nodes = nodes[starts]
        self.lowest = np.minimum.reduceat(lowest, starts) if len(starts) else lowest
        self.highest = np.maximum.reduceat(highest, starts) if len(starts) else highest

    def smallest_of_node_and_neighbours(self, nodes: np.ndarray) -> np.ndarray:
        return np.minimum(nodes, self.lowest[np.searchsorted(self.nodes, nodes)])

    def is_star_part(self) -> bool:
        """Every node a centre (only larger neighbours) or a leaf (one distinct neighbour)."""
        return bool(np.all((self.lowest > self.nodes) | (self.lowest == self.highest)))

    def leaves(self) -> np.ndarray:
        """(node, its smallest neighbour) for nodes with a smaller neighbour."""
        smaller = self.lowest < self.nodes
        return np.stack((self.nodes[smaller], self.lowest[smaller]), axis=1)


class DiskComponents:
    """Edges added in any order and batch size; ``solve`` runs the steps; ``removals`` gives the
    (removed, survivor) rows, partition by partition (each partition's rows sorted by node)."""

    def __init__(self, scratch: Path, rows: int, edges: int) -> None:
        """`rows`: records held at once; `edges`: about how many will be added."""
        self.scratch, self.rows = scratch, rows
        # both directions of each edge, ~80% of `rows` per partition: the uneven spread of a
        # hash rarely takes a partition past one chunk (then it is read and sorted once a step)
        self.partitions = max(1, math.ceil(2 * edges / (0.8 * rows)))
        self.steps = 0
        shutil.rmtree(scratch, ignore_errors=True)  # a crashed attempt's files are never read
        self._folder(0).mkdir(parents=True)

    def _folder(self, step: int) -> Path:
        return self.scratch / f"step-{step:04d}"

    def _partition_path(self, step: int, partition: int) -> Path:
        return self._folder(step) / f"{partition:05d}.bin"

    def _append_edges(self, step: int, edges: np.ndarray) -> None:
        records = np.concatenate((edges, edges[:, ::-1]))
        append_grouped(records, partition_of(records[:, 0], self.partitions), lambda p: self._partition_path(step, p))

    def add(self, edges: np.ndarray) -> None:
        """Undirected edges, shape (k, 2), e.g. forest rows."""
        edges = edges.astype(np.uint64, copy=False)
        self._append_edges(0, edges[edges[:, 0] != edges[:, 1]])  # a loop links nothing

    def _sorted_chunks(self, step: int, partition: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(nodes, neighbours) of the partition's records, chunk by chunk, each sorted and without
        repeats: looking sorted nodes up in the table reads it in order (random lookups took most
        of the time), and the buckets partitions' forests repeat most rows (a pair of near copies
        shares band keys in many partitions: ~10 forest rows per removed document at 4 M)."""
        for chunk in read_chunks(self._partition_path(step, partition), self.rows, _RECORD_WORDS):
            order = np.lexsort((chunk[:, 1], chunk[:, 0]))
            nodes, neighbours = chunk[order, 0], chunk[order, 1]
            first = np.concatenate(([True], (nodes[1:] != nodes[:-1]) | (neighbours[1:] != neighbours[:-1])))
            yield nodes[first], neighbours[first]

    def _chunk_source(self, step: int, partition: int) -> Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]:
        """What reads the partition's sorted chunks, once per pass: a partition of one chunk (the
        usual case) is read and sorted once and kept for the second pass."""
        path = self._partition_path(step, partition)
        if not path.exists() or path.stat().st_size <= self.rows * _RECORD_WORDS * 8:
            kept = list(self._sorted_chunks(step, partition))
            return lambda: kept
        return lambda: self._sorted_chunks(step, partition)

    @staticmethod
    def _table(chunks: Iterable[tuple[np.ndarray, np.ndarray]]) -> _NeighbourTable:
        table = _NeighbourTable()
        for nodes, neighbours in chunks:
            starts = np.flatnonzero(np.concatenate(([True], nodes[1:] != nodes[:-1])))
            table.add(nodes[starts], np.minimum.reduceat(neighbours, starts), np.maximum.reduceat(neighbours, starts))
        return table

    def _step(self, step: int, large: bool) -> bool:
        """One large-star or small-star step from `step`'s files into step + 1's; whether
        `step`'s graph was already final."""
        self._folder(step + 1).mkdir()
        final = True
        for partition in range(self.partitions):
            chunks = self._chunk_source(step, partition)
            table = self._table(chunks())
            final = final and table.is_star_part()
            if not large:  # small-star: a node with smaller neighbours joins their smallest
                self._append_edges(step + 1, table.leaves())
            for nodes, neighbours in chunks():
                smallest = table.smallest_of_node_and_neighbours(nodes)
                if large:  # larger neighbours join the smallest of the node's neighbourhood
                    keep = neighbours > nodes
                else:  # smaller neighbours join the smallest of them
                    keep = (neighbours < nodes) & (neighbours != smallest)
                self._append_edges(step + 1, np.stack((neighbours[keep], smallest[keep]), axis=1))
        shutil.rmtree(self._folder(step))
        return final

    def solve(self) -> None:
        """Alternate large-star and small-star until a step's input was already final."""
        while not self._step(self.steps, large=self.steps % 2 == 0):
            self.steps += 1
        self.steps += 1

    def removals(self) -> Iterator[np.ndarray]:
        for partition in range(self.partitions):
            yield self._table(self._sorted_chunks(self.steps, partition)).leaves()
