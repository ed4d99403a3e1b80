"""Word n-gram shingles of a batch of documents, hashed to uint64 without a Python loop per word.

Normalization, close to datatrove's MinHash: lowercase, fold diacritics (NFD, then drop combining
marks), decimal digits of any script become ASCII ("collapse_digit_runs" also turns every run of
them into "0", as datatrove does). Words are maximal runs of word characters (regex `\\w`:
letters, digits, "_"); any other character separates words. datatrove deletes punctuation
instead, which glues "well-" + "known" back together only when no line break came between them;
splitting keeps a re-wrapped copy identical to its original, and matches the word definition the
duplicate labels are measured with.

Pipeline, all numpy over the batch's concatenated code points: character classes from a lookup
table; each word's polynomial hash sum(c_k * P**k) from one prefix sum (P is odd, so it has an
inverse modulo 2**64 and a word's hash does not depend on where it starts); each n-gram's hash
from the hashes of its n words, weighted by position.
"""

import functools
import re
import sys
import unicodedata

import numpy as np

from data_pipeline.dedup.hashing import mix64, odd_constants, seeded_constants

SEPARATOR, WORD, DIGIT, MARK = 0, 1, 2, 3
_ZERO = ord("0")
_WORD_BASE_STREAM, _NGRAM_WEIGHTS_STREAM, _SHORT_DOC_STREAM = 1, 2, 3
_CODE_POINTS = sys.maxunicode + 1


@functools.cache
def _every_character() -> str:
    return "".join(map(chr, range(_CODE_POINTS)))


def _code_points_matching(pattern: str) -> list[int]:
    return [ord(match.group()) for match in re.finditer(pattern, _every_character())]


@functools.cache
def character_classes() -> np.ndarray:
    """Class of every code point: SEPARATOR, WORD, DIGIT or MARK (combining mark, category Mn)."""
    classes = np.zeros(_CODE_POINTS, dtype=np.uint8)
    classes[_code_points_matching(r"\w")] = WORD
    classes[_code_points_matching(r"\d")] = DIGIT
    classes[[ord(c) for c in _every_character() if unicodedata.category(c) == "Mn"]] = MARK
    return classes


@functools.cache
def ascii_digits() -> np.ndarray:
    """The ASCII digit of every decimal digit code point ("٣" and "３" -> "3"); 0 elsewhere."""
    table = np.zeros(_CODE_POINTS, dtype=np.uint32)
    digits = _code_points_matching(r"\d")
    table[digits] = [_ZERO + unicodedata.decimal(chr(digit)) for digit in digits]
    return table


def _fold(text: str) -> str:
    lowered = text.lower()
    # ASCII has nothing to decompose; skipping NFD for it saves most of the normalization time
    return lowered if lowered.isascii() else unicodedata.normalize("NFD", lowered)


def _compress(code_points: np.ndarray, doc_starts: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop the code points where `keep` is False and move the document starts accordingly."""
    dropped = np.flatnonzero(~keep)
    return code_points[keep], doc_starts - np.searchsorted(dropped, doc_starts)


def _collapse_digit_runs(
    code_points: np.ndarray, classes: np.ndarray, doc_starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    is_digit = classes == DIGIT
    continues_run = np.zeros_like(is_digit)
    continues_run[1:] = is_digit[1:] & is_digit[:-1]
    if continues_run.any():
        code_points, doc_starts = _compress(code_points, doc_starts, ~continues_run)
        classes = classes[~continues_run]
    return np.where(classes == DIGIT, np.uint32(_ZERO), code_points), classes, doc_starts


def normalized_code_points(texts: list[str], collapse_digit_runs: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalized code points of all texts joined by a separator, which of them belong to words,
    and the start of each text. Digits become ASCII; with `collapse_digit_runs` every run of them
    becomes a single "0"."""
    folded = [_fold(text) for text in texts]
    joined = "\n".join(folded)  # "\n" is a separator, so no word spans two documents
    code_points = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    lengths = np.fromiter(map(len, folded), dtype=np.int64, count=len(folded))
    doc_starts = np.concatenate(([0], np.cumsum(lengths + 1)[:-1]))
    classes = character_classes()[code_points]
    is_mark = classes == MARK
    if is_mark.any():
        code_points, doc_starts = _compress(code_points, doc_starts, ~is_mark)
        classes = classes[~is_mark]
    if collapse_digit_runs:
        code_points, classes, doc_starts = _collapse_digit_runs(code_points, classes, doc_starts)
    else:
        code_points = np.where(classes == DIGIT, ascii_digits()[code_points], code_points)
    return code_points, classes != SEPARATOR, doc_starts


def _table_size(count: int) -> int:
    """A power of two >= count, and at least 2**22: nearly every batch shares one table."""
    return max(2**22, 1 << (count - 1).bit_length())


@functools.lru_cache(maxsize=2)
def _power_tables(base: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """base**i and base**-i modulo 2**64 for i < size (an odd base is invertible modulo 2**64)."""
    inverse = pow(base, -1, 2**64)
    powers = np.cumprod(np.full(size, base, dtype=np.uint64)) * np.uint64(inverse)
    inverse_powers = np.cumprod(np.full(size, inverse, dtype=np.uint64)) * np.uint64(base)
    return powers, inverse_powers


class ShingleHasher:
    """Hashes of the word n-grams of documents; a document of fewer than n words (even none) is
    one shingle made of the words it has."""

    def __init__(self, ngram_size: int, seed: int, collapse_digit_runs: bool) -> None:
        self.ngram_size = ngram_size
        self.collapse_digit_runs = collapse_digit_runs
        self._word_base = int(odd_constants(seed, 1, _WORD_BASE_STREAM)[0])
        self._position_weights = odd_constants(seed, ngram_size, _NGRAM_WEIGHTS_STREAM)
        # keeps an n-word document apart from a shorter one whose words form a prefix of it
        self._short_doc_salts = seeded_constants(seed, ngram_size, _SHORT_DOC_STREAM)

    def word_hashes(self, code_points: np.ndarray, is_word: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hash and start position of every word (maximal run where `is_word`) in code points."""
        edges = np.diff(is_word.view(np.int8), prepend=np.int8(0), append=np.int8(0))
        starts = np.flatnonzero(edges == 1)
        ends = np.flatnonzero(edges == -1)
        powers, inverse_powers = _power_tables(self._word_base, _table_size(len(code_points)))
        prefix_sums = np.zeros(len(code_points) + 1, dtype=np.uint64)
        np.cumsum(code_points * powers[: len(code_points)], out=prefix_sums[1:])
        position_free = (prefix_sums[ends] - prefix_sums[starts]) * inverse_powers[starts]
        return mix64(position_free), starts

    def hash_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Shingle hashes of all texts, grouped by document in order, and each document's first
        index into them (every document has at least one shingle)."""
        code_points, is_word, doc_starts = normalized_code_points(texts, self.collapse_digit_runs)
        words, word_starts = self.word_hashes(code_points, is_word)
        doc_of_word = np.searchsorted(doc_starts, word_starts, side="right") - 1
        words_per_doc = np.bincount(doc_of_word, minlength=len(texts))
        first_word = np.concatenate(([0], np.cumsum(words_per_doc)[:-1]))
        ngram_sums, short_doc_sums = self._weighted_sums(words, words_per_doc, first_word)
        last_word = first_word + words_per_doc - 1
        starts_full_ngram = np.arange(len(words)) + (self.ngram_size - 1) <= last_word[doc_of_word]

        is_short = words_per_doc < self.ngram_size
        shingles_per_doc = np.where(is_short, 1, words_per_doc - self.ngram_size + 1)
        doc_offsets = np.concatenate(([0], np.cumsum(shingles_per_doc)[:-1]))
        shingles = np.empty(int(shingles_per_doc.sum()), dtype=np.uint64)
        is_full_ngram_slot = np.ones(len(shingles), dtype=bool)
        is_full_ngram_slot[doc_offsets[is_short]] = False
        shingles[is_full_ngram_slot] = mix64(ngram_sums[starts_full_ngram])
        salts = self._short_doc_salts[words_per_doc[is_short]]
        shingles[~is_full_ngram_slot] = mix64(short_doc_sums[is_short] ^ salts)
        return shingles, doc_offsets

    def _weighted_sums(
        self, words: np.ndarray, words_per_doc: np.ndarray, first_word: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """sum_k weight_k * words[i + k] over the n words from each i (valid where they are all in
        one document), and for each document of m < n words the same sum over its m words."""
        padded = np.concatenate((words, np.zeros(self.ngram_size, dtype=np.uint64)))
        ngram_sums = np.zeros(len(words), dtype=np.uint64)
        short_doc_sums = np.zeros(len(words_per_doc), dtype=np.uint64)
        for position, weight in enumerate(self._position_weights):
            # here ngram_sums covers `position` words: the whole of a document that has that many
            has_this_many = (words_per_doc == position) & (position > 0)
            short_doc_sums[has_this_many] = ngram_sums[first_word[has_this_many]]
            ngram_sums += padded[position : position + len(words)] * weight
        return ngram_sums, short_doc_sums
