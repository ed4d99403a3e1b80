"""The learned quality classifier: fastText's linear model (Joulin et al. 2017, "Bag of Tricks for
Efficient Text Classification"), as DCLM uses it to pick pretraining text (Li et al. 2024,
"DataComp-LM", section 4.2: a reference set of good text against a sample of the raw pool).

Features: a document's tokens (data_pipeline.text: words and punctuation marks), lower-cased,
and its token n-grams up to ``word_ngrams``, each hashed into one of ``buckets`` rows of an
embedding table. The document's vector is the mean of its features' rows (``dim`` values); the
score is sigmoid(output · vector + bias): the model's probability that the document comes from
the reference (positive) set.

Model file (``.npz``, read without pickle; the format is checked on load):
  header      UTF-8 JSON as uint8: {"format": "quality-model", "version": 1, "buckets", "dim",
              "word_ngrams", "seed", "training": {...settings and held-out metrics},
              "sha256": of the arrays below}
  embeddings  float32 (buckets, dim)
  output      float32 (dim + 1,): the weights, then the bias
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from data_pipeline.dedup.hashing import mix64
from data_pipeline.text import split_tokens

FORMAT, VERSION = "quality-model", 1
_NGRAM_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_SIGN_FLIP = 1 << 63
_MAX_CACHED_TOKENS = 1 << 19  # token -> hash entries kept per process (~60 MB at most)


class TokenHasher:
    """Stable 64-bit hashes of lower-cased tokens (xxh64), cached: the same few hundred
    thousand words make up most of any corpus."""

    def __init__(self) -> None:
        self.cache: dict[str, int] = {}

    def __call__(self, tokens: list[str]) -> np.ndarray:
        cache = self.cache
        if len(cache) > _MAX_CACHED_TOKENS:
            cache.clear()
        try:  # all known: one C loop
            hashes = np.fromiter(map(cache.__getitem__, tokens), dtype=np.int64, count=len(tokens))
        except KeyError:
            for token in set(tokens).difference(cache):
                # kept as signed 64-bit values: numpy converts those faster than ones >= 2**63
                cache[token] = xxhash.xxh64_intdigest(token.lower().encode()) - _SIGN_FLIP
            hashes = np.fromiter(map(cache.__getitem__, tokens), dtype=np.int64, count=len(tokens))
        return (hashes ^ np.int64(-_SIGN_FLIP)).view(np.uint64)


def feature_rows(token_hashes: np.ndarray, buckets: int, word_ngrams: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct embedding rows of a document's features and the share of the features in
    each (they sum to 1): the mean of the rows, weighted, is the document's vector."""
    hashes = [token_hashes]
    ngram = token_hashes
    for n in range(2, word_ngrams + 1):
        ngram = mix64(ngram[:-1] * _NGRAM_MULTIPLIER + token_hashes[n - 1 :])
        hashes.append(ngram)
    features = np.concatenate(hashes) % np.uint64(buckets)
    if not len(features):
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    rows, counts = np.unique(features.astype(np.int64), return_counts=True)
    return rows, (counts / len(features)).astype(np.float32)


@dataclass
class QualityModel:
    embeddings: np.ndarray  # float32 (buckets, dim)
    output: np.ndarray  # float32 (dim + 1,): weights, bias
    word_ngrams: int
    header: dict[str, Any]

    def __post_init__(self) -> None:
        self.hash_tokens = TokenHasher()

    @property
    def buckets(self) -> int:
        return self.embeddings.shape[0]

    def features(self, tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return feature_rows(self.hash_tokens(tokens), self.buckets, self.word_ngrams)

    def logit(self, rows: np.ndarray, weights: np.ndarray) -> float:
        vector = weights @ self.embeddings[rows] if len(rows) else np.zeros(self.embeddings.shape[1], np.float32)
        return float(vector @ self.output[:-1] + self.output[-1])

    def score(self, tokens: list[str]) -> float:
        """Probability that the text resembles the positive training set."""
        return sigmoid(self.logit(*self.features(tokens)))

    def score_text(self, text: str) -> float:
        return self.score(split_tokens(text))


def sigmoid(logit: float) -> float:
    return float(1.0 / (1.0 + np.exp(-np.clip(logit, -60.0, 60.0))))


def arrays_sha256(embeddings: np.ndarray, output: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in (embeddings, output):
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return digest.hexdigest()


def save_model(
    path: str | Path, embeddings: np.ndarray, output: np.ndarray, word_ngrams: int, seed: int, training: dict[str, Any]
) -> dict[str, Any]:
    """Write the model file (atomically: a half-written file never carries the final name)."""
    header = {
        "format": FORMAT,
        "version": VERSION,
        "buckets": int(embeddings.shape[0]),
        "dim": int(embeddings.shape[1]),
        "word_ngrams": word_ngrams,
        "seed": seed,
        "training": training,
        "sha256": arrays_sha256(embeddings, output),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as file:  # a file object: np.savez would append ".npz" to a name
        np.savez(
            file,
            header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
            embeddings=embeddings,
            output=output,
        )
    partial.replace(path)
    return header


def load_model(path: str) -> QualityModel:
    """The model at ``path``; a one-line error naming the file when it is missing or is not a
    quality model written by ``data_pipeline.train_quality`` (or was changed since)."""
    file = Path(path).expanduser()
    fix = "train one with python -m data_pipeline.train_quality positives=DIR negatives=DIR output=FILE"
    if not file.is_file():
        raise FileNotFoundError(f"filters.quality.model={path}: no such file; {fix}")
    try:
        with np.load(file, allow_pickle=False) as arrays:
            header = json.loads(arrays["header"].tobytes().decode())
            embeddings, output = arrays["embeddings"], arrays["output"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError, EOFError) as error:
        raise ValueError(
            f"filters.quality.model={path}: not a quality model file ({type(error).__name__}: {error}); {fix}"
        ) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("version") != VERSION:
        raise ValueError(f"filters.quality.model={path}: not a {FORMAT} file of version {VERSION}; {fix}")
    shapes_match = (
        embeddings.ndim == 2 and embeddings.dtype == np.float32 and output.shape == (embeddings.shape[1] + 1,)
    )
    if not shapes_match or header.get("sha256") != arrays_sha256(embeddings, output):
        raise ValueError(
            f"filters.quality.model={path}: the weights do not match the header's sha256 "
            f"(a damaged or edited file); {fix}"
        )
    return QualityModel(embeddings, output, int(header["word_ngrams"]), header)


def cached_model(path: str) -> QualityModel:
    """One copy per worker process (each work unit builds its filters anew); a file rewritten
    since is read again."""
    try:
        stat = Path(path).expanduser().stat()
    except OSError:
        return load_model(path)  # the error names the file
    return _cached_model(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=2)
def _cached_model(path: str, mtime_ns: int, size: int) -> QualityModel:
    return load_model(path)
