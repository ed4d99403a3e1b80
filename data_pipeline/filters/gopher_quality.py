"""Gopher quality rules: Rae et al. 2021, "Scaling Language Models: Methods, Analysis &
Insights from Training Gopher", appendix A1.1 (MassiveText quality filters)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from data_pipeline.document import Document
from data_pipeline.filters.base import Filter, exceeds, falls_short
from data_pipeline.text import count_words_with_letter, is_word


@dataclass
class GopherQualityConfig:
    """Defaults: the paper's, with datatrove 0.10.1's values where the paper gives none."""

    enabled: bool = True
    min_words: Optional[int] = 50
    max_words: Optional[int] = 100_000
    min_mean_word_length: Optional[float] = 3
    max_mean_word_length: Optional[float] = 10
    max_symbol_word_ratio: Optional[float] = 0.1  # "#" and ellipses, each per word
    max_bullet_lines_ratio: Optional[float] = 0.9
    max_ellipsis_lines_ratio: Optional[float] = 0.3
    min_alpha_words_ratio: Optional[float] = 0.8
    # Gopher counts words; datatrove counts every token, punctuation marks included, which
    # drops most technical prose. true reproduces datatrove's decisions.
    alpha_ratio_counts_punctuation: bool = False
    min_stop_words: Optional[int] = 2
    stop_words: list[str] = field(default_factory=lambda: ["the", "be", "to", "of", "and", "that", "have", "with"])


BULLETS = ("•", "-", "*", "‣", "◦", "●")
ELLIPSES = ("...", "…")


class GopherQualityFilter(Filter):
    name = "gopher_quality"

    def __init__(self, config: GopherQualityConfig) -> None:
        super().__init__()
        self.config = config
        # tokens are matched as written: "The" counts as "the" through its spelled variants
        self.stop_word_variants = {
            variant: word.lower()
            for word in config.stop_words
            for variant in (word.lower(), word.capitalize(), word.upper())
        }

    def check(self, doc: Document) -> str | None:
        config = self.config
        text, tokens = doc.text, doc.tokens
        words = [token for token in tokens if is_word(token)]
        if falls_short(len(words), config.min_words):
            return "too_few_words"
        if exceeds(len(words), config.max_words):
            return "too_many_words"
        mean_length = sum(map(len, words)) / len(words) if words else 0.0
        if falls_short(mean_length, config.min_mean_word_length):
            return "short_mean_word_length"
        if exceeds(mean_length, config.max_mean_word_length):
            return "long_mean_word_length"
        # Per token, as datatrove does; Gopher does not say what its "words" are here.
        per_token = max(len(tokens), 1)
        if exceeds(text.count("#") / per_token, config.max_symbol_word_ratio):
            return "hash_symbol_ratio"
        if exceeds(sum(map(text.count, ELLIPSES)) / per_token, config.max_symbol_word_ratio):
            return "ellipsis_ratio"
        lines = text.splitlines() or [""]
        if exceeds(
            sum(line.lstrip().startswith(BULLETS) for line in lines) / len(lines), config.max_bullet_lines_ratio
        ):
            return "bullet_lines"
        if exceeds(
            sum(line.rstrip().endswith(ELLIPSES) for line in lines) / len(lines), config.max_ellipsis_lines_ratio
        ):
            return "ellipsis_lines"
        counted = tokens if config.alpha_ratio_counts_punctuation else words
        if falls_short(count_words_with_letter(text) / max(len(counted), 1), config.min_alpha_words_ratio):
            return "few_alphabetic_words"
        stop_words_present = {self.stop_word_variants[t] for t in self.stop_word_variants.keys() & set(words)}
        if falls_short(len(stop_words_present), config.min_stop_words):
            return "few_stop_words"
        return None
