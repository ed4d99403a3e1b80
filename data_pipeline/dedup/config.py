"""``dedup.*`` of ``configs/curate.yaml``: exact and MinHash-LSH near dedup (docs/dedup.md).
``MinHashConfig`` is also what ``MinHasher`` takes, so the command and the API read one definition."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

AUTO = "auto"  # dedup.partitions: from the input's size (curate/partitions.py)


@dataclass
class MinHashConfig:
    ngram_size: int = 5
    # 16 bands of 7 rows (112 permutations) put the LSH threshold near Jaccard 0.67, which
    # finds the planted 0.7-0.8 copies that 14 × 8 misses (docs/dedup.md).
    num_bands: int = 16
    rows_per_band: int = 7
    seed: int = 1
    # Band candidates whose signatures estimate a Jaccard below this are not merged.
    min_jaccard: float = 0.6
    # datatrove turns every digit run into "0": that merges documents that differ only in their
    # numbers (release notes of two versions, register tables) and costs 3 points of precision.
    collapse_digit_runs: bool = False

    @property
    def num_permutations(self) -> int:
        return self.num_bands * self.rows_per_band

    def problems(self) -> list[str]:
        """What is wrong with these settings, one line each (empty when they are fine)."""
        if min(self.ngram_size, self.num_bands, self.rows_per_band) < 1:
            return [f"dedup.minhash={self}: ngram_size, num_bands and rows_per_band must be >= 1"]
        return []


@dataclass
class DedupConfig:
    exact: bool = True  # 128-bit hash of the normalized text
    near: bool = True  # MinHash LSH
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    batch_size: int = 1024  # documents MinHashed at once, and keys written to disk at once
    # Key ranges the buckets stage splits the band keys and exact hashes into: its units. Each
    # holds ~1/partitions of all keys (24 bytes per document and band). auto: one per
    # partition_mb of input text (curate/partitions.py; C4: ~14,000); or a number.
    partitions: Any = AUTO
    partition_mb: float = 64
    # Forest rows the clusters unit merges in memory (a removed document has a row in each
    # partition that paired it: ~10 at 4 M documents; memory follows the removed documents,
    # ~240 bytes each); above it, connected components on disk, about this many edge records
    # at once (~135 bytes each): at 2 M a unit stays near 0.3 GB, whatever the duplicates.
    cluster_rows: int = 2_000_000

    def problems(self) -> list[str]:
        """What is wrong with these settings, one line each (empty when they are fine)."""
        problems = self.minhash.problems() if self.near else []
        partitions = self.partitions
        if partitions != AUTO and (not isinstance(partitions, int) or isinstance(partitions, bool) or partitions < 1):
            problems.append(
                f"dedup.partitions={partitions}: give a number >= 1, or auto (one per dedup.partition_mb of input)"
            )
        if self.partition_mb <= 0:
            problems.append(f"dedup.partition_mb={self.partition_mb}: need > 0")
        if self.cluster_rows < 1:
            problems.append(f"dedup.cluster_rows={self.cluster_rows}: need at least 1")
        return problems
