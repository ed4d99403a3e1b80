"""Gopher repetition rules: Rae et al. 2021, appendix A1.1 and table A1 (duplicate lines and
paragraphs, most frequent n-grams, duplicated n-grams), as fractions of the document.

n-grams are counted with numpy over 64-bit token hashes, not as joined strings: that makes
the nine n-gram passes cheap enough to run on every document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from data_pipeline.document import Document
from data_pipeline.filters.base import Filter, exceeds
from data_pipeline.text import split_nonempty_lines, split_paragraphs


@dataclass
class GopherRepetitionConfig:
    enabled: bool = True
    max_dup_line_frac: Optional[float] = 0.30
    max_dup_para_frac: Optional[float] = 0.30
    max_dup_line_char_frac: Optional[float] = 0.20
    max_dup_para_char_frac: Optional[float] = 0.20
    # n -> most the most frequent n-gram may cover, as a fraction of the characters
    max_top_ngram_char_frac: dict[int, float] = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    # n -> most all repeated n-grams together may cover
    max_dup_ngram_char_frac: dict[int, float] = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )


# odd multiplier of the rolling n-gram hash (uint64 arithmetic wraps around)
_NGRAM_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


def duplicate_count_and_chars(parts: list[str]) -> tuple[int, int]:
    """How many parts repeat an earlier one, and their characters."""
    seen: set[str] = set()
    count = chars = 0
    for part in parts:
        if part in seen:
            count += 1
            chars += len(part)
        else:
            seen.add(part)
    return count, chars


class NgramWalk:
    """n-gram statistics of a token sequence for n = 2, 3, ... in turn.

    Only a position whose (n-1)-gram occurs twice can start an n-gram that occurs twice, and in
    prose such positions are few: each step works on the survivors of the step before, so the
    nine n-gram sizes cost little more than the first. An n-gram covers the characters of its
    tokens (the spaces between them are not counted).
    """

    def __init__(self, tokens: list[str]) -> None:
        # Python caches a str's hash on the string; equal tokens get equal hashes
        self.token_hashes = np.fromiter(map(hash, tokens), dtype=np.int64, count=len(tokens)).view(np.uint64)
        self.token_lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        self.length_prefix = np.concatenate(([0], np.cumsum(self.token_lengths)))
        self.n = 1
        self.candidates = np.arange(len(tokens))  # positions that may start a repeated n-gram
        self.candidate_hashes = self.token_hashes  # the n-gram hash at each candidate
        self.top_chars = self.duplicated_chars = 0

    def advance(self) -> None:
        """Move to n + 1 and compute top_chars (characters covered by the occurrences of the
        most frequent n-gram; ties: the longest) and duplicated_chars (characters of the
        tokens inside any n-gram that repeats an earlier occurrence)."""
        self.n += 1
        n, prefix = self.n, self.length_prefix
        in_range = self.candidates < len(self.token_hashes) - n + 1
        positions = self.candidates[in_range]
        hashes = self.candidate_hashes[in_range] * _NGRAM_MULTIPLIER + self.token_hashes[positions + n - 1]
        if not len(positions):  # no n-gram repeats: the top one is the longest
            self.top_chars = self._longest_ngram_chars() if len(self.token_hashes) >= n else 0
            self.duplicated_chars = 0
            return
        _, first, inverse, counts = np.unique(hashes, return_index=True, return_inverse=True, return_counts=True)
        repeated = counts[inverse] >= 2
        self.candidates, self.candidate_hashes = positions[repeated], hashes[repeated]
        if not len(self.candidates):
            self.top_chars = self._longest_ngram_chars()
            self.duplicated_chars = 0
            return
        top = counts == counts.max()
        top_starts = positions[first[top]]
        self.top_chars = int((counts[top] * (prefix[top_starts + n] - prefix[top_starts])).max())
        is_first = np.zeros(len(positions), dtype=bool)
        is_first[first] = True
        self.duplicated_chars = self._covered_chars(positions[repeated & ~is_first], n)

    def _longest_ngram_chars(self) -> int:
        n, prefix = self.n, self.length_prefix
        return int((prefix[n:] - prefix[:-n]).max())

    def _covered_chars(self, starts: np.ndarray, n: int) -> int:
        """Characters of the union of the n-token windows at sorted ``starts``."""
        if not len(starts):
            return 0
        gaps = np.flatnonzero(np.diff(starts) > n)
        block_first = starts[np.concatenate(([0], gaps + 1))]
        block_last = starts[np.concatenate((gaps, [len(starts) - 1]))]
        return int((self.length_prefix[block_last + n] - self.length_prefix[block_first]).sum())


class GopherRepetitionFilter(Filter):
    name = "gopher_repetition"

    def __init__(self, config: GopherRepetitionConfig) -> None:
        super().__init__()
        self.config = config

    def check(self, doc: Document) -> str | None:
        config, text = self.config, doc.text
        total_chars = len(text)
        if not total_chars:
            return "empty"
        for unit, split, max_frac, max_char_frac in (
            ("paragraph", split_paragraphs, config.max_dup_para_frac, config.max_dup_para_char_frac),
            ("line", split_nonempty_lines, config.max_dup_line_frac, config.max_dup_line_char_frac),
        ):
            parts = split(text)
            duplicates, duplicate_chars = duplicate_count_and_chars(parts)
            if exceeds(duplicates / len(parts), max_frac):
                return f"dup_{unit}_frac"
            if exceeds(duplicate_chars / total_chars, max_char_frac):
                return f"dup_{unit}_char_frac"
        top_limits, dup_limits = config.max_top_ngram_char_frac, config.max_dup_ngram_char_frac
        walk = NgramWalk(doc.tokens)
        for n in range(2, max(top_limits.keys() | dup_limits.keys(), default=1) + 1):
            walk.advance()
            if exceeds(walk.top_chars / total_chars, top_limits.get(n)):
                return f"top_{n}gram_char_frac"
            if exceeds(walk.duplicated_chars / total_chars, dup_limits.get(n)):
                return f"dup_{n}gram_char_frac"
        return None
