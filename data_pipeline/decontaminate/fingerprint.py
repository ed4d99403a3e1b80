"""The n-gram fingerprint of a tokenize run's train split: the sorted, unique 64-bit hashes
of every normalized word n-gram of its text (ngrams.py, the normalization decontamination
uses), so that evaluation can tell which task items a model trained on this data has seen.

Built in bounded memory, as work units:
  encode units   hash the grams of their train documents and spill sorted unique runs of at
                 most RUN_HASHES hashes (FingerprintRunWriter)
  merge units    one per range of the 64-bit hash space, each about RANGE_HASHES run hashes:
                 the range's slice of every run (binary search on the memory-mapped runs),
                 merged and made unique (merge_range)
  publish        the ranges' files concatenated in order into ``train.ngrams.u64`` beside the
                 token shards, with ``train.ngrams.json`` (n, the count, the normalization)

Size: 8 bytes per distinct gram. Measured on ../shared/corpus (BENCHMARKS.md): ~118,000
distinct 13-grams per MB of text, 0.95 bytes of fingerprint per byte of text: ~4 GB per billion
tokens at ~4.2 bytes of text per token (twice the uint16 tokens). A gram absent from the data
is reported present with probability (distinct grams) / 2^64: ~3e-11 at a billion tokens, so
an item of 50 grams is wrongly called contaminated about once in 10^9 items.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_pipeline.decontaminate.ngrams import sorted_unique, text_gram_hashes

RUN_HASHES = 4_000_000  # 32 MB of hashes held by an encode unit before it spills a run
RANGE_HASHES = 16_000_000  # run hashes per merge unit: ~128 MB read, ~256 MB while merging
FINGERPRINT_FILE = "train.ngrams.u64"
FINGERPRINT_META = "train.ngrams.json"
NORMALIZATION = (
    "Brown et al. 2020 appendix C: lower-case, strip punctuation, split on whitespace; "
    "data_pipeline/decontaminate/ngrams.py"
)


class FingerprintRunWriter:
    """One encode unit's grams, spilled as sorted unique runs ``<prefix>-<k>.u64``."""

    def __init__(self, prefix: Path, n: int) -> None:
        self.prefix, self.n = prefix, n
        self.pending: list[np.ndarray] = []
        self.pending_count = 0
        self.runs: list[Path] = []
        self.hashes = 0

    def add(self, text: str) -> None:
        grams = text_gram_hashes(text, self.n)
        self.pending.append(grams)
        self.pending_count += len(grams)
        if self.pending_count >= RUN_HASHES:
            self._spill()

    def _spill(self) -> None:
        if not self.pending_count:
            return
        run = sorted_unique(np.concatenate(self.pending))
        path = self.prefix.with_name(f"{self.prefix.name}-{len(self.runs):04d}.u64")
        path.parent.mkdir(parents=True, exist_ok=True)
        run.tofile(path)
        self.runs.append(path)
        self.hashes += len(run)
        self.pending, self.pending_count = [], 0

    def close(self) -> dict[str, Any]:
        """The unit's runs (its stats name them: a failed earlier attempt's files are ignored)."""
        self._spill()
        return {"runs": [path.name for path in self.runs], "hashes": self.hashes}

    def abort(self) -> None:
        for path in self.runs:
            path.unlink(missing_ok=True)


@dataclass(frozen=True)
class HashRange:
    """Merge unit: the hashes in [low, high) of every run."""

    index: int
    low: int
    high: int
    runs: tuple[str, ...]  # paths of every run

    @property
    def key(self) -> str:
        return f"range-{self.index:05d}"

    def __str__(self) -> str:
        return self.key


def plan_ranges(runs: list[Path], total_hashes: int) -> list[HashRange]:
    """Equal slices of the hash space (the hashes are spread evenly), RANGE_HASHES run hashes each."""
    count = max(1, -(-total_hashes // RANGE_HASHES))
    bounds = [index * 2**64 // count for index in range(count + 1)]
    return [HashRange(index, bounds[index], bounds[index + 1], tuple(map(str, runs))) for index in range(count)]


def range_file(folder: Path, unit: HashRange) -> Path:
    return folder / f"{unit.key}.u64"


def merge_range(unit: HashRange, folder: str) -> dict[str, Any]:
    """Write the sorted unique hashes of the range; returns their count (the unit's marker)."""
    pieces = []
    for path in unit.runs:
        run = np.memmap(path, dtype=np.uint64, mode="r") if Path(path).stat().st_size else np.empty(0, dtype=np.uint64)
        first, last = (
            np.searchsorted(run, np.uint64(unit.low)),
            len(run) if unit.high >= 2**64 else np.searchsorted(run, np.uint64(unit.high)),
        )
        pieces.append(np.asarray(run[first:last]))
    merged = sorted_unique(np.concatenate([np.empty(0, dtype=np.uint64), *pieces]))
    path = range_file(Path(folder), unit)
    merged.tofile(path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    return {"hashes": len(merged)}


def publish(token_dir: Path, folder: Path, ranges: list[HashRange], n: int) -> dict[str, Any]:
    """Concatenate the ranges' files (in order: sorted overall) into the fingerprint."""
    target = token_dir / FINGERPRINT_FILE
    scratch = target.with_name(target.name + ".tmp")
    with open(scratch, "wb") as output:
        for unit in ranges:
            with open(range_file(folder, unit), "rb") as piece:
                shutil.copyfileobj(piece, output, 16 << 20)
    scratch.replace(target)
    meta = {"ngram": n, "hashes": target.stat().st_size // 8, "normalization": NORMALIZATION}
    (token_dir / FINGERPRINT_META).write_text(json.dumps(meta, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    return meta


class Fingerprint:
    """A token dir's fingerprint, memory-mapped: which texts share an n-gram with the train split."""

    def __init__(self, token_dir: Path) -> None:
        self.meta = json.loads((token_dir / FINGERPRINT_META).read_text())
        self.n: int = self.meta["ngram"]
        path = token_dir / FINGERPRINT_FILE
        self.hashes = (
            np.memmap(path, dtype=np.uint64, mode="r") if path.stat().st_size else np.empty(0, dtype=np.uint64)
        )

    @staticmethod
    def find(token_dir: str | Path) -> Fingerprint | None:
        token_dir = Path(token_dir)
        return Fingerprint(token_dir) if (token_dir / FINGERPRINT_META).is_file() else None

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """For each gram hash: is it in the train split?"""
        if not len(self.hashes) or not len(hashes):
            return np.zeros(len(hashes), dtype=bool)
        positions = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
        return np.asarray(self.hashes[positions]) == hashes

    def overlaps(self, text: str) -> bool:
        """Does the text share a word n-gram with the train split?"""
        return bool(self.contains(text_gram_hashes(text, self.n)).any())
