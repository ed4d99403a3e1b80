"""The quality stage, one unit, with ``filters.quality.keep_fraction``: the filter units' score
histograms summed, and the score bin above which the top keep_fraction of the scored documents
lie (filters/quality.py). Its marker holds the cut; the write stage applies it."""

from __future__ import annotations

import json
from typing import Any

from data_pipeline.curate.config import CurateConfig
from data_pipeline.curate.dedup_stages import SingleUnit
from data_pipeline.curate.output_dir import CurateOutputDir
from data_pipeline.executors.stage import marker_path, unit_stats
from data_pipeline.filters.quality import bin_floor_score, merge_histograms, pick_threshold_bin
from data_pipeline.io.units import InputUnit

STAGE = "quality"


def ranks_by_quality(config: CurateConfig) -> bool:
    quality = config.filters.quality
    return quality.enabled and quality.keep_fraction is not None


def quality_unit(_: SingleUnit, config: CurateConfig, units: list[InputUnit]) -> dict[str, Any]:
    layout = CurateOutputDir(config.output_dir)
    histogram = merge_histograms(
        [stats["filters"]["quality"]["histogram"] for stats in unit_stats(layout.markers("filter"), units)]
    )
    keep_fraction = config.filters.quality.keep_fraction
    cut = pick_threshold_bin(histogram, keep_fraction)
    return {
        "keep_fraction": keep_fraction,
        "threshold_bin": cut,
        "threshold_score": bin_floor_score(cut),
        "documents_scored": sum(histogram.values()),
        "documents_kept": sum(count for b, count in histogram.items() if b >= cut),
    }


def quality_cut(layout: CurateOutputDir) -> dict[str, Any]:
    """The quality stage's result (its marker)."""
    return json.loads(marker_path(layout.markers(STAGE), SingleUnit()).read_text())
