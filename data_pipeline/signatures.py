"""Per-document dedup keys written by the filter stage and gathered by the dedup stage:
the exact hash (128-bit, of the normalized and filtered text) and the MinHash signature."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_pipeline.curate.config import DedupConfig
from data_pipeline.dedup.exact import exact_hash
from data_pipeline.dedup.minhash import MinHasher, MinHashParams

_EXACT_HASH_BYTES = 16


@dataclass
class Signatures:
    ids: np.ndarray  # str, (n,)
    exact: np.ndarray  # uint8, (n, 16)
    minhashes: np.ndarray  # uint64, (n, permutations); (n, 0) when near dedup is off

    def save(self, path: Path) -> None:
        temporary = path.with_name(path.name + ".tmp.npz")
        np.savez(temporary, ids=self.ids, exact=self.exact, minhashes=self.minhashes)
        temporary.replace(path)

    @classmethod
    def load(cls, path: Path) -> "Signatures":
        with np.load(path) as arrays:
            return cls(arrays["ids"], arrays["exact"], arrays["minhashes"])

    @classmethod
    def concatenate(cls, parts: list["Signatures"]) -> "Signatures":
        return cls(*(np.concatenate([getattr(part, name) for part in parts]) for name in ("ids", "exact", "minhashes")))

    def exact_hashes(self) -> list[bytes]:
        return [row.tobytes() for row in self.exact]


class SignatureBuilder:
    """Collects documents and computes their keys in batches (MinHash is vectorized over a batch)."""

    def __init__(self, config: DedupConfig) -> None:
        self.hasher = MinHasher(minhash_params(config)) if config.near else None
        self.width = self.hasher.params.num_permutations if self.hasher is not None else 0
        self.batch_size = config.batch_size
        self.ids: list[str] = []
        self.exact: list[bytes] = []
        self.minhash_batches: list[np.ndarray] = []
        self.pending_texts: list[str] = []

    def add(self, doc_id: str, text: str) -> None:
        self.ids.append(doc_id)
        # always computed, even with exact dedup off: it tells exact copies from near ones in the report
        self.exact.append(exact_hash(text))
        if self.hasher is not None:
            self.pending_texts.append(text)
            if len(self.pending_texts) >= self.batch_size:
                self._hash_pending()

    def _hash_pending(self) -> None:
        if self.pending_texts:
            self.minhash_batches.append(self.hasher.signatures(self.pending_texts))
            self.pending_texts = []

    def finish(self) -> Signatures:
        if self.hasher is not None:
            self._hash_pending()
        empty = np.empty((len(self.ids), self.width), np.uint64)
        minhashes = np.concatenate(self.minhash_batches) if self.minhash_batches else empty
        exact = np.frombuffer(b"".join(self.exact), dtype=np.uint8).reshape(len(self.ids), _EXACT_HASH_BYTES)
        return Signatures(np.array(self.ids, dtype=str), exact, minhashes)


def minhash_params(config: DedupConfig) -> MinHashParams:
    m = config.minhash
    return MinHashParams(m.ngram_size, m.num_bands, m.rows_per_band, m.seed, m.collapse_digit_runs)
