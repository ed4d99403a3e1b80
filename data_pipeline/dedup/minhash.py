"""MinHash signatures and LSH band keys of documents, vectorized over shingles and permutations.

Permutation j maps a shingle hash x to a_j * x + b_j modulo 2**64 (a_j odd, so a bijection); a
document's signature is the minimum of each permutation over its shingles. Two documents agree on
one permutation with probability J, the Jaccard similarity of their shingle sets, so they share a
band (all its rows equal) with probability J**rows, and at least one band with
1 - (1 - J**rows)**bands. The defaults, 16 bands x 7 rows, give 0.5 at J = 0.64, 0.75 at J = 0.7,
0.98 at J = 0.8 and 0.12 at J = 0.5; verifying candidates on the full signature (clusters.py)
removes the pairs below J ~ 0.6 that the banding lets through. 14 x 8 (the same 112
permutations) gives 0.57 at J = 0.7 and 0.92 at J = 0.8: recall 0.955-0.959 on the benchmark
corpus against 0.970-0.975 for 16 x 7, both at precision >= 0.9996 (docs/dedup.md).
"""

from collections.abc import Iterator
from typing import Optional

import numpy as np

from data_pipeline.dedup.config import MinHashConfig
from data_pipeline.dedup.hashing import mix64, odd_constants, seeded_constants
from data_pipeline.dedup.shingles import ShingleHasher

_MULTIPLIER_STREAM, _INCREMENT_STREAM, _BAND_ROW_STREAM = 11, 12, 13
# shingles permuted at once: the (permutations x chunk) block of uint64 stays in the CPU caches
_SHINGLE_CHUNK = 8192
# code points normalized at once: bounds the memory of the per-character arrays
_BATCH_CODE_POINTS = 4_000_000
_LARGEST = np.iinfo(np.uint64).max  # where every running minimum starts


def _batches(texts: list[str], max_code_points: int) -> Iterator[tuple[int, int]]:
    """[start, stop) ranges of consecutive texts of at most ~max_code_points characters."""
    start, size = 0, 0
    for index, text in enumerate(texts):
        if size and size + len(text) > max_code_points:
            yield start, index
            start, size = index, 0
        size += len(text)
    if start < len(texts):
        yield start, len(texts)


class MinHasher:
    def __init__(self, params: Optional[MinHashConfig] = None) -> None:
        params = params or MinHashConfig()
        if problems := params.problems():
            raise ValueError("; ".join(problems))
        self.params = params
        self._shingles = ShingleHasher(params.ngram_size, params.seed, params.collapse_digit_runs)
        count = params.num_permutations
        self._multipliers = odd_constants(params.seed, count, _MULTIPLIER_STREAM)
        self._increments = seeded_constants(params.seed, count, _INCREMENT_STREAM)[:, None]
        self._row_weights = odd_constants(params.seed, params.rows_per_band, _BAND_ROW_STREAM)

    def signatures(self, texts: list[str]) -> np.ndarray:
        """MinHash signatures, shape (len(texts), num_bands * rows_per_band), dtype uint64."""
        result = np.empty((len(texts), self.params.num_permutations), dtype=np.uint64)
        for start, stop in _batches(texts, _BATCH_CODE_POINTS):
            shingles, doc_offsets = self._shingles.hash_batch(texts[start:stop])
            result[start:stop] = self._min_per_document(shingles, doc_offsets)
        return result

    def band_hashes(self, texts: list[str]) -> np.ndarray:
        """One uint64 key per (text, band), shape (len(texts), num_bands)."""
        return self.bands_of(self.signatures(texts))

    def bands_of(self, signatures: np.ndarray) -> np.ndarray:
        """Band keys of signatures: each band's rows combined with distinct odd weights (equal rows
        give equal keys; rows that differ change the sum), then mixed."""
        rows = signatures.reshape(len(signatures), self.params.num_bands, self.params.rows_per_band)
        return mix64((rows * self._row_weights).sum(axis=2, dtype=np.uint64))

    def _min_per_document(self, shingles: np.ndarray, doc_offsets: np.ndarray) -> np.ndarray:
        signatures = np.full((len(doc_offsets), self.params.num_permutations), _LARGEST, dtype=np.uint64)
        for chunk_start in range(0, len(shingles), _SHINGLE_CHUNK):
            chunk = shingles[chunk_start : chunk_start + _SHINGLE_CHUNK]
            # documents overlapping this chunk; the first may have begun in an earlier chunk
            first_doc = np.searchsorted(doc_offsets, chunk_start, side="right") - 1
            stop_doc = np.searchsorted(doc_offsets, chunk_start + len(chunk), side="left")
            segment_starts = np.maximum(doc_offsets[first_doc:stop_doc] - chunk_start, 0)
            permuted = np.multiply.outer(self._multipliers, chunk)
            permuted += self._increments
            chunk_minima = np.minimum.reduceat(permuted, segment_starts, axis=1)
            np.minimum(signatures[first_doc:stop_doc], chunk_minima.T, out=signatures[first_doc:stop_doc])
        return signatures


def estimate_jaccard(signature_a: np.ndarray, signature_b: np.ndarray) -> np.ndarray:
    """Fraction of equal MinHash rows: an unbiased estimate of the shingle sets' Jaccard similarity.
    Works on single signatures or on aligned rows of two signature matrices."""
    return np.mean(signature_a == signature_b, axis=-1)
