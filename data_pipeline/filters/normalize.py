"""Normalization: one Unicode form, one line ending, no control characters, so that rules and
exact dedup see copies that differ only in encoding as equal. By default it keeps every space,
tab and blank line (code and LaTeX need them); collapsing and stripping whitespace are options."""
from __future__ import annotations

import re
import unicodedata

from data_pipeline.curate.config import NormalizeConfig
from data_pipeline.filters.base import Filter
from data_pipeline.document import Document

# C0 and C1 controls except tab and newline; zero-width spaces and joiners; the BOM.
CONTROL_CHARS_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")
LINE_SEPARATORS_RE = re.compile("[\u2028\u2029\x85]")
OTHER_SPACES_RE = re.compile("[\t\u00a0\u2000-\u200a\u202f\u205f\u3000]")
# starts with a literal, so re searches for it fast instead of trying every space
SPACE_RUNS_RE = re.compile("  +")


class Normalizer(Filter):
    name = "normalize"

    def __init__(self, config: NormalizeConfig) -> None:
        super().__init__()
        self.config = config
        self.blank_lines_re = (
            re.compile(r"\n{%d,}" % (config.max_blank_lines + 2)) if config.max_blank_lines is not None else None
        )

    def check(self, doc: Document) -> str | None:
        doc.text = self.normalize(doc.text)
        return None if doc.text.strip() else "empty"

    def normalize(self, text: str) -> str:
        config = self.config
        if config.unicode_form:
            text = unicodedata.normalize(config.unicode_form, text)
        # The cheap `in` tests skip most regex scans: clean text is the common case.
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        text = LINE_SEPARATORS_RE.sub("\n", text)
        if config.remove_control_chars:
            text = CONTROL_CHARS_RE.sub("", text)
        if config.collapse_spaces:
            text = OTHER_SPACES_RE.sub(" ", text)
            if "  " in text:
                text = SPACE_RUNS_RE.sub(" ", text)
        if config.strip_lines:
            text = "\n".join(line.strip(" \t") for line in text.split("\n"))
        if self.blank_lines_re is not None:
            text = self.blank_lines_re.sub("\n" * (config.max_blank_lines + 1), text)
        return text.strip() if config.strip_lines else text
