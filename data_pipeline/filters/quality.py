"""The learned quality filter (DCLM's fastText filter, Li et al. 2024, "DataComp-LM"): scores each
document with a model from ``data_pipeline.train_quality`` (quality_model.py), keeps the score in
the document's metadata (``quality_score``) and decides by either

- ``threshold``: remove a document scoring below it, here, in the filter stage; or
- ``keep_fraction``: keep the top fraction of the corpus by score. No unit sees the corpus, so
  each filter unit counts its scores in a histogram of fixed fine bins (on the logit: fine near
  0 and 1 too); a one-unit ``quality`` stage sums them and picks the threshold bin, and the write
  stage applies it. The counts add up alike however the corpus is cut into units, so the kept
  set is the same for any number of units and workers; memory is one histogram (at most
  ``SCORE_BINS`` counts) per unit.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from data_pipeline.document import Document
from data_pipeline.filters.base import Filter
from data_pipeline.filters.quality_model import cached_model, sigmoid

SCORE_KEY = "quality_score"
_LOGIT_LIMIT = 16  # |logit| beyond this shares the end bins (a probability within 1e-7 of 0 or 1)
_BINS_PER_LOGIT = 256
SCORE_BINS = 2 * _LOGIT_LIMIT * _BINS_PER_LOGIT


@dataclass
class QualityConfig:
    model: Optional[str] = None  # a model file from data_pipeline.train_quality; null: no quality filter
    # Remove documents scoring below this (a probability in [0, 1]); or:
    threshold: Optional[float] = None
    # keep this top fraction, by score, of the documents that reach the filter, decided over the
    # whole corpus (a one-unit quality stage; the write stage applies it). Neither: score only.
    keep_fraction: Optional[float] = None

    @property
    def enabled(self) -> bool:
        return self.model is not None

    def problems(self) -> list[str]:
        """What is wrong with these settings, one line each (empty when they are fine); the model
        file itself is read by ``cached_model``."""
        problems = []
        if not self.enabled and (self.threshold is not None or self.keep_fraction is not None):
            problems.append(
                "filters.quality.threshold and keep_fraction need "
                "filters.quality.model=<file from data_pipeline.train_quality>"
            )
        if self.threshold is not None and self.keep_fraction is not None:
            problems.append("filters.quality: give threshold or keep_fraction, not both")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            problems.append(f"filters.quality.threshold={self.threshold}: need a score in [0, 1]")
        if self.keep_fraction is not None and not 0 < self.keep_fraction <= 1:
            problems.append(f"filters.quality.keep_fraction={self.keep_fraction}: need a fraction in (0, 1]")
        return problems


def score_bin(score: float) -> int:
    """The histogram bin of a score: bins of 1/256 on the logit, from -16 to 16."""
    if score <= 0.0:
        return 0
    if score >= 1.0:
        return SCORE_BINS - 1
    logit = math.log(score) - math.log1p(-score)
    return min(max(int(math.floor((logit + _LOGIT_LIMIT) * _BINS_PER_LOGIT)), 0), SCORE_BINS - 1)


def bin_floor_score(bin_index: int) -> float:
    """The lowest score of a bin (for the report)."""
    return 0.0 if bin_index == 0 else sigmoid(bin_index / _BINS_PER_LOGIT - _LOGIT_LIMIT)


def pick_threshold_bin(histogram: Mapping[int, int], keep_fraction: float) -> int:
    """The highest bin whose documents and all above it are at least keep_fraction of all: the
    kept share is keep_fraction rounded up to whole bins (the ties of the last bin stay)."""
    total = sum(histogram.values())
    wanted = math.ceil(keep_fraction * total - 1e-9)
    above = 0
    for bin_index in sorted(histogram, reverse=True):
        above += histogram[bin_index]
        if above >= wanted:
            return bin_index
    return 0


def merge_histograms(histograms: list[Mapping[str, int]]) -> Counter[int]:
    """Per-unit histograms as stored in the units' stats (JSON: bin numbers as strings)."""
    total: Counter[int] = Counter()
    for histogram in histograms:
        total.update({int(bin_index): count for bin_index, count in histogram.items()})
    return total


class QualityFilter(Filter):
    name = "quality"

    def __init__(self, config: QualityConfig) -> None:
        super().__init__()
        assert config.model is not None
        self.model = cached_model(config.model)
        self.threshold = config.threshold
        self.histogram: Counter[int] | None = Counter() if config.keep_fraction is not None else None

    def stats(self) -> dict[str, Any]:
        stats = super().stats()
        if self.histogram is not None:
            stats["histogram"] = {str(bin_index): self.histogram[bin_index] for bin_index in sorted(self.histogram)}
        return stats

    def check(self, doc: Document) -> str | None:
        score = self.model.score(doc.tokens)
        doc.meta[SCORE_KEY] = score
        if self.histogram is not None:
            self.histogram[score_bin(score)] += 1
        if self.threshold is not None and score < self.threshold:
            return "below_threshold"
        return None
