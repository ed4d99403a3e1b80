"""Normalization: one Unicode form, one line ending, no control characters, so that rules and
exact dedup see copies that differ only in encoding as equal. By default it keeps every space,
tab and blank line (code and LaTeX need them); collapsing and stripping whitespace are options.
It counts the documents each step changed: the curation report lists them."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from functools import partial
from typing import Any, Callable

from data_pipeline.curate.config import NormalizeConfig
from data_pipeline.document import Document
from data_pipeline.filters.base import Filter

# C0 and C1 controls except tab and newline; zero-width spaces and joiners; the BOM.
CONTROL_CHARS_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")
LINE_SEPARATORS_RE = re.compile("[\u2028\u2029\x85]")
OTHER_SPACES_RE = re.compile("[\t\u00a0\u2000-\u200a\u202f\u205f\u3000]")
# starts with a literal, so re searches for it fast instead of trying every space
SPACE_RUNS_RE = re.compile("  +")


def to_unicode_form(form: str, text: str) -> str:
    # the check is cheaper than normalizing, and most text is already in the form
    return text if unicodedata.is_normalized(form, text) else unicodedata.normalize(form, text)


def unify_line_endings(text: str) -> str:
    if "\r" in text:  # the cheap `in` tests skip most regex scans: clean text is the common case
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return LINE_SEPARATORS_RE.sub("\n", text)


def remove_control_chars(text: str) -> str:
    return CONTROL_CHARS_RE.sub("", text)


def collapse_spaces(text: str) -> str:
    text = OTHER_SPACES_RE.sub(" ", text)
    return SPACE_RUNS_RE.sub(" ", text) if "  " in text else text


def strip_lines(text: str) -> str:
    return "\n".join(line.strip(" \t") for line in text.split("\n")).strip()


class Normalizer(Filter):
    name = "normalize"

    def __init__(self, config: NormalizeConfig) -> None:
        super().__init__()
        self.config = config
        # (name in the report, step), in the order they run
        self.steps: list[tuple[str, Callable[[str], str]]] = []
        if config.unicode_form:
            self.steps.append((f"unicode_{config.unicode_form}", partial(to_unicode_form, config.unicode_form)))
        self.steps.append(("line_endings", unify_line_endings))
        if config.remove_control_chars:
            self.steps.append(("control_chars", remove_control_chars))
        if config.collapse_spaces:
            self.steps.append(("spaces_collapsed", collapse_spaces))
        if config.strip_lines:
            self.steps.append(("lines_stripped", strip_lines))
        if config.max_blank_lines is not None:
            blank_lines_re = re.compile(r"\n{%d,}" % (config.max_blank_lines + 2))
            self.steps.append(("blank_lines", partial(blank_lines_re.sub, "\n" * (config.max_blank_lines + 1))))
        self.changed: Counter[str] = Counter()  # documents each step changed

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "changed": dict(self.changed)}

    def check(self, doc: Document) -> str | None:
        doc.text = self.normalize(doc.text)
        return None if doc.text.strip() else "empty"

    def normalize(self, text: str) -> str:
        for change, step in self.steps:
            changed = step(text)
            if changed != text:
                self.changed[change] += 1
                text = changed
        return text
