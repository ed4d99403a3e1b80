"""Normalization: one Unicode form, one line ending, no control characters, so that rules and
exact dedup see copies that differ only in encoding as equal. By default it keeps every space,
tab and blank line (code and LaTeX need them); collapsing and stripping whitespace are options.
It counts the documents each step changed: the curation report lists them."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Optional

from data_pipeline.document import Document
from data_pipeline.filters.base import Filter


@dataclass
class NormalizeConfig:
    enabled: bool = True
    unicode_form: Optional[str] = "NFC"  # NFC | NFKC | NFD | NFKD | null (leave as is)
    remove_control_chars: bool = True  # C0/C1 controls except tab and newline, and zero-width marks
    # Off by default: indentation and tabs carry meaning in code, StackExchange and LaTeX, and
    # the tokenizer is lossless, so curation must not change them.
    collapse_spaces: bool = False  # runs of spaces, tabs and other spaces become one space
    strip_lines: bool = False  # no whitespace at either end of a line or of the document
    max_blank_lines: Optional[int] = None  # consecutive empty lines kept at most (null: all)

    def problems(self) -> list[str]:
        """What is wrong with these settings, one line each (empty when they are fine)."""
        if self.unicode_form is not None and self.unicode_form not in UNICODE_FORMS:
            return [f"filters.normalize.unicode_form={self.unicode_form}: choose NFC, NFKC, NFD, NFKD or null"]
        return []


# C0 and C1 controls except tab and newline; zero-width spaces and joiners; the BOM.
UNICODE_FORMS = ("NFC", "NFKC", "NFD", "NFKD")
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
            blank_lines_re = re.compile(rf"\n{{{config.max_blank_lines + 2},}}")
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
