"""The formatters and document filters, in the order the pipeline runs them, and ``filters.*``
of ``configs/curate.yaml``: each filter's settings, defined beside the filter."""

from __future__ import annotations

from dataclasses import dataclass, field

from data_pipeline.filters.base import Filter
from data_pipeline.filters.c4 import C4Config, C4Filter
from data_pipeline.filters.gopher_quality import GopherQualityConfig, GopherQualityFilter
from data_pipeline.filters.gopher_repetition import GopherRepetitionConfig, GopherRepetitionFilter
from data_pipeline.filters.language import LanguageConfig, LanguageFilter
from data_pipeline.filters.normalize import NormalizeConfig, Normalizer
from data_pipeline.filters.pii import PiiConfig, PiiFormatter
from data_pipeline.filters.quality import QualityConfig, QualityFilter


@dataclass
class FiltersConfig:
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    pii: PiiConfig = field(default_factory=PiiConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    c4: C4Config = field(default_factory=C4Config)
    quality: QualityConfig = field(default_factory=QualityConfig)

    def problems(self) -> list[str]:
        """What is wrong with these settings, one line each (empty when they are fine); the files
        they name (quality model, bad-words list) are read by the command before any work."""
        return self.normalize.problems() + self.c4.problems() + self.language.problems() + self.quality.problems()


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
