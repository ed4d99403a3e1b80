"""Word n-grams and their 64-bit hashes: the one normalization shared by decontamination
(curation) and the training-data fingerprint (tokenize) that evaluation checks tasks against.

The normalization is the one Brown et al. 2020 ("Language Models are Few-Shot Learners",
appendix C) use to find benchmark text in training data: lower-case, strip punctuation,
split on whitespace. Punctuation here is every character that is neither a word character
(letter, digit, underscore) nor whitespace; it is removed, not replaced, so "don't" is the
word "dont" and a token of punctuation only ("--") is no word at all.

A gram hash combines the words' xxh64 hashes with a polynomial over 64-bit integers (wrapping
arithmetic, vectorized in numpy: n multiply-adds per document, whatever its length), then mixes
the result and its length with splitmix64's finalizer, so that grams of different lengths never
share a hash by construction and the hashes are spread evenly (sorted arrays stay balanced).
"""

from __future__ import annotations

import re
from typing import Iterable

import numpy as np
import xxhash

DEFAULT_NGRAM = 13  # Brown et al. 2020, appendix C
PUNCTUATION_RE = re.compile(r"[^\w\s]+")
WORD_SPAN_RE = re.compile(r"\S+")
_ASCII_PUNCTUATION = {code: None for code in range(128) if PUNCTUATION_RE.fullmatch(chr(code))}
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: the polynomial loses no bit
_LENGTH_SALT = np.uint64(0xD6E8FEB86659FD93)


def normalized_words(text: str) -> list[str]:
    """The text's words after the GPT-3 normalization."""
    lowered = text.lower()
    if lowered.isascii():  # the same deletions as the expression, by a table: ~1.6x faster
        return lowered.translate(_ASCII_PUNCTUATION).split()
    return PUNCTUATION_RE.sub("", lowered).split()


def words_with_spans(text: str) -> tuple[list[str], np.ndarray]:
    """normalized_words(text) and, for each word, the [start, end) characters of the
    whitespace-separated token of ``text`` it came from (to cut matched spans out)."""
    words, spans = [], []
    for match in WORD_SPAN_RE.finditer(text):
        word = PUNCTUATION_RE.sub("", match.group().lower())
        if word:
            words.append(word)
            spans.append(match.span())
    return words, np.asarray(spans, dtype=np.int64).reshape(-1, 2)


def word_hashes(words: Iterable[str]) -> np.ndarray:
    return np.fromiter(
        (xxhash.xxh64_intdigest(word.encode("utf-8", "surrogatepass")) for word in words), dtype=np.uint64
    )


def _mix(values: np.ndarray, length: int) -> np.ndarray:
    """splitmix64's finalizer of (values xor a per-length salt)."""
    with np.errstate(over="ignore"):
        x = values ^ (_LENGTH_SALT * np.uint64(length))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def gram_hashes(hashed_words: np.ndarray, lengths: Iterable[int]) -> dict[int, np.ndarray]:
    """length -> the hash of every gram of that many consecutive words (position i: the gram
    starting at word i); lengths longer than the text get an empty array."""
    wanted = sorted(set(lengths))
    result: dict[int, np.ndarray] = {}
    accumulator = hashed_words.copy()
    with np.errstate(over="ignore"):
        for length in range(1, (wanted[-1] if wanted else 0) + 1):
            if length > 1:  # grams of `length` words from those of length - 1
                accumulator = accumulator[:-1] * _MULTIPLIER + hashed_words[length - 1 :]
            if length in wanted:
                result[length] = _mix(accumulator, length)
    return result


def sorted_unique(hashes: np.ndarray) -> np.ndarray:
    """The distinct hashes, sorted (a sort and one pass: np.unique's hash table is ~5x slower here)."""
    hashes = np.sort(hashes)
    return hashes[np.concatenate(([True], hashes[1:] != hashes[:-1]))] if len(hashes) else hashes


def text_gram_hashes(text: str, n: int = DEFAULT_NGRAM) -> np.ndarray:
    """The hashes of the text's word n-grams (empty for a text of fewer than n words)."""
    return gram_hashes(word_hashes(normalized_words(text)), [n])[n]


def item_gram_hashes(text: str, n: int, min_words: int = 1) -> tuple[int, np.ndarray]:
    """An evaluation item's grams: its n-grams, or its whole text as one gram when it has
    fewer than n words (but at least ``min_words``); returns (gram length, hashes), length 0
    and no hash for an item shorter than ``min_words``."""
    hashed = word_hashes(normalized_words(text))
    length = min(n, len(hashed))
    if length < max(min_words, 1):
        return 0, np.empty(0, dtype=np.uint64)
    return length, gram_hashes(hashed, [length])[length]
