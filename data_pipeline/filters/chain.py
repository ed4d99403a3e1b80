"""The formatters and document filters, in the order the pipeline runs them."""

from __future__ import annotations

from data_pipeline.curate.config import FiltersConfig
from data_pipeline.filters.base import Filter
from data_pipeline.filters.c4 import C4Filter
from data_pipeline.filters.gopher_quality import GopherQualityFilter
from data_pipeline.filters.gopher_repetition import GopherRepetitionFilter
from data_pipeline.filters.language import LanguageFilter
from data_pipeline.filters.normalize import Normalizer
from data_pipeline.filters.pii import PiiFormatter
from data_pipeline.filters.quality import QualityFilter

# datatrove's order. Language ID comes last: it is the slowest rule per byte (fastText reads
# every character n-gram), and by then the Gopher rules (stop words in particular) have
# removed most text that is not English prose. C4 rewrites the text, so it follows the
# Gopher rules, which measure the document as a whole. PII is replaced before any rule reads
# the text (as DESIGN.md orders it), so the removed/ files hold no address either. The learned
# quality score comes last: it ranks what the rules let through (DCLM's order).
FILTER_ORDER = (
    ("normalize", Normalizer),
    ("pii", PiiFormatter),
    ("gopher_repetition", GopherRepetitionFilter),
    ("gopher_quality", GopherQualityFilter),
    ("c4", C4Filter),
    ("language", LanguageFilter),
    ("quality", QualityFilter),
)


def build_filters(config: FiltersConfig) -> list[Filter]:
    """The enabled filters, configured."""
    filters = []
    for name, filter_class in FILTER_ORDER:
        stage_config = getattr(config, name)
        if stage_config.enabled:
            filters.append(filter_class(stage_config))
    return filters
