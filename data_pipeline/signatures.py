"""Per-document dedup keys written by the filter stage and gathered by the dedup stage:
the exact hash (128-bit, of the normalized and filtered text) and the MinHash LSH band keys."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_pipeline.curate_config import DedupConfig
from data_pipeline.dedup.exact import exact_hash
from data_pipeline.dedup.minhash import MinHasher, MinHashParams

_EXACT_HASH_BYTES = 16


@dataclass
class Signatures:
    ids: np.ndarray  # str, (n,)
    exact: np.ndarray  # uint8, (n, 16)
    bands: np.ndarray  # uint64, (n, num_bands); (n, 0) when near dedup is off

    def save(self, path: Path) -> None:
        temporary = path.with_name(path.name + ".tmp.npz")
        np.savez(temporary, ids=self.ids, exact=self.exact, bands=self.bands)
        temporary.replace(path)

    @classmethod
    def load(cls, path: Path) -> "Signatures":
        with np.load(path) as arrays:
            return cls(arrays["ids"], arrays["exact"], arrays["bands"])

    @classmethod
    def concatenate(cls, parts: list["Signatures"]) -> "Signatures":
        return cls(*(np.concatenate([getattr(part, name) for part in parts]) for name in ("ids", "exact", "bands")))

    def exact_hashes(self) -> list[bytes]:
        return [row.tobytes() for row in self.exact]


class SignatureBuilder:
    """Collects documents and computes their keys in batches (MinHash is vectorized over a batch)."""

    def __init__(self, config: DedupConfig) -> None:
        minhash = config.minhash
        self.num_bands = minhash.num_bands if config.near else 0
        params = MinHashParams(minhash.ngram_size, minhash.num_bands, minhash.rows_per_band, minhash.seed)
        self.hasher = MinHasher(params) if config.near else None
        self.batch_size = config.batch_size
        self.ids: list[str] = []
        self.exact: list[bytes] = []
        self.band_batches: list[np.ndarray] = []
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
            self.band_batches.append(self.hasher.band_hashes(self.pending_texts))
            self.pending_texts = []

    def finish(self) -> Signatures:
        if self.hasher is not None:
            self._hash_pending()
        empty = np.empty((len(self.ids), self.num_bands), np.uint64)
        bands = np.concatenate(self.band_batches) if self.band_batches else empty
        exact = np.frombuffer(b"".join(self.exact), dtype=np.uint8).reshape(len(self.ids), _EXACT_HASH_BYTES)
        return Signatures(np.array(self.ids, dtype=str), exact, bands)
