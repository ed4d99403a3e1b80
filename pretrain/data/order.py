"""The global order of training samples: a pure function of (seed, position).

``position`` counts samples consumed since the start of training, over all ranks. Every
rank can compute which sample sits at any position without talking to the others, so a
resumed run (on any number of ranks) continues exactly where the last one stopped.
"""

from __future__ import annotations

import numpy as np


class ShuffledOrder:
    """Epoch after epoch over ``size`` samples, each epoch a fresh permutation drawn from
    (seed, epoch) alone."""

    def __init__(self, size: int, seed: int) -> None:
        if size < 1:
            raise ValueError("cannot order an empty dataset")
        self.size = size
        self.seed = seed
        self._epoch = -1
        self._permutation = np.empty(0, dtype=np.int64)

    def _permutation_of(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._permutation = np.random.default_rng([self.seed, epoch]).permutation(self.size)
            self._epoch = epoch
        return self._permutation

    def __getitem__(self, position: int) -> int:
        epoch, offset = divmod(position, self.size)
        return int(self._permutation_of(epoch)[offset])


class BlendedOrder:
    """Interleaves several datasets by weight.

    Positions come in blocks of ``block`` samples. Each block holds a fixed number of samples
    of each source (largest-remainder rounding of ``weights · block``), in an order shuffled by
    (seed, block). So the weights hold to within 1/block in every block, and any position maps
    to (source, that source's own position) in O(block) time, no history needed.
    """

    def __init__(self, weights: list[float], seed: int, block: int = 4096) -> None:
        if not weights or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"data.sources weights must be non-negative and not all zero, got {weights}")
        share = np.asarray(weights, dtype=np.float64) / sum(weights) * block
        counts = np.floor(share).astype(np.int64)
        by_remainder = np.argsort(-(share - counts), kind="stable")
        counts[by_remainder[: block - counts.sum()]] += 1
        self.counts = counts
        self.block = block
        self.seed = seed
        self._block_index = -1
        self._sources = np.empty(0, dtype=np.int64)
        self._ranks = np.empty(0, dtype=np.int64)

    def _layout(self, block_index: int) -> tuple[np.ndarray, np.ndarray]:
        """For one block: the source of each slot and the slot's rank among that source's."""
        if block_index != self._block_index:
            sources = np.repeat(np.arange(len(self.counts)), self.counts)
            np.random.default_rng([self.seed, block_index]).shuffle(sources)
            ranks = np.empty_like(sources)
            for source in range(len(self.counts)):
                slots = sources == source
                ranks[slots] = np.arange(int(slots.sum()))
            self._block_index, self._sources, self._ranks = block_index, sources, ranks
        return self._sources, self._ranks

    def __getitem__(self, position: int) -> tuple[int, int]:
        """(source index, position within that source's own stream)."""
        block_index, slot = divmod(position, self.block)
        sources, ranks = self._layout(block_index)
        source = int(sources[slot])
        return source, block_index * int(self.counts[source]) + int(ranks[slot])
