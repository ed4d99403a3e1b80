"""C4 rules: Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified
Text-to-Text Transformer", section 2.2, in the order of the reference implementation
(tensorflow_datasets c4_utils.clean_page). The thresholds and end marks come from the config:
the paper's by default, datatrove's with ``+filters/c4=datatrove`` (docs/curation.md). Line
rules remove lines; document rules remove the document. Line rules judge each line stripped of
its indentation, but never rewrite the
lines they keep: indentation, tabs and the blank lines between kept lines stay byte for byte
(only ``remove_citations`` edits a kept line, taking its markers out); removed lines, and blank
lines before the first kept line or after the last, go. A page's final line break stays when
its last line is kept (a page every line of which passes comes out unchanged, ``\r\n`` too).

The bad-words rule (off by default; section 2.2: pages with a word of the "List of Dirty,
Naughty, Obscene, and Otherwise Bad Words") runs last, on the kept text; bad_words.py reads the
list."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

from data_pipeline.document import Document
from data_pipeline.filters.bad_words import bad_words_pattern
from data_pipeline.filters.base import Filter, falls_short
from data_pipeline.text import count_sentences


@dataclass
class C4Config:
    """Defaults: the paper's, as it states them; datatrove's are ``+filters/c4=datatrove``
    (configs/filters/c4/datatrove.yaml)."""

    enabled: bool = True
    # line rules: a failing line is removed from the document
    drop_lines_without_terminal_punct: bool = True
    # Raffel et al. 2020, section 2.2: "a period, exclamation mark, question mark, or end quotation mark"
    terminal_punctuation: list[str] = field(default_factory=lambda: [".", "?", "!", '"'])
    min_words_per_line: Optional[int] = 5  # words counted after citation markers are removed
    max_word_length: Optional[int] = 1000
    drop_javascript_lines: bool = True
    drop_policy_lines: bool = True
    remove_citations: bool = True  # "[1]", "[edit]", "[citation needed]"
    # document rules
    drop_lorem_ipsum: bool = True
    drop_curly_brace: bool = True
    min_sentences: Optional[int] = 3  # counted over the lines kept
    # a word list (one a line): drop pages holding any; "default": the bundled stand-in list
    # (filters/bad_words.py); C4 used LDNOOBW's en list (CC-BY-4.0). null: off
    bad_words: Optional[str] = None

    def problems(self) -> list[str]:
        """What is wrong with these settings, one line each (empty when they are fine)."""
        marks = self.terminal_punctuation
        if not marks or "" in marks:  # none ends every line; an empty mark ends every line
            return [
                f"filters.c4.terminal_punctuation={list(marks)}: "
                "give one or more non-empty end marks, e.g. [.,?,!,'\"']"
            ]
        return []


CITATION_RE = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)
POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


class C4Filter(Filter):
    name = "c4"

    def __init__(self, config: C4Config) -> None:
        super().__init__()
        self.config = config
        self.terminal_punctuation = tuple(config.terminal_punctuation)
        # lines removed, by rule: reported next to the documents removed
        self.lines_removed: Counter[str] = Counter()
        self.bad_words = bad_words_pattern(config.bad_words) if config.bad_words is not None else None

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "lines_removed": dict(self.lines_removed)}

    def check(self, doc: Document) -> str | None:
        config = self.config
        kept_lines: list[str] = []  # as written, blank lines included
        sentences = 0
        last_line_kept = False  # the last non-blank line: its final line break stays with it
        for raw_line in doc.text.split("\n"):
            line = raw_line.strip()
            if not line:
                if kept_lines:  # blank lines after the last kept line are dropped below
                    kept_lines.append(raw_line)
                continue
            last_line_kept = False
            if config.remove_citations and "[" in line:
                raw_line = CITATION_RE.sub("", raw_line)
                line = raw_line.strip()
            # counted after the markers go: "[1]" is not a word of the sentence
            words = line.split()
            if config.max_word_length is not None and any(len(word) > config.max_word_length for word in words):
                self.lines_removed["too_long_word"] += 1
                continue
            if config.drop_lines_without_terminal_punct and (
                not line.endswith(self.terminal_punctuation) or line.endswith("...")
            ):
                self.lines_removed["no_terminal_punctuation"] += 1
                continue
            if falls_short(len(words), config.min_words_per_line):
                self.lines_removed["too_few_words"] += 1
                continue
            lowered = line.lower()
            if config.drop_lorem_ipsum and "lorem ipsum" in lowered:
                return "lorem_ipsum"
            if config.drop_javascript_lines and "javascript" in lowered:
                self.lines_removed["javascript"] += 1
                continue
            if config.drop_curly_brace and "{" in line:
                return "curly_brace"
            if config.drop_policy_lines and any(phrase in lowered for phrase in POLICY_PHRASES):
                self.lines_removed["policy"] += 1
                continue
            kept_lines.append(raw_line)
            last_line_kept = True
            sentences += count_sentences(line)
        if config.min_sentences is not None and sentences < config.min_sentences:
            return "too_few_sentences"
        while kept_lines and not kept_lines[-1].strip():
            kept_lines.pop()
        text = "\n".join(kept_lines)
        if last_line_kept and doc.text.endswith("\n"):  # "\r\n" too: the kept line holds the "\r"
            text += "\n"
        elif not last_line_kept and text.endswith("\r"):  # a "\r\n" break whose "\n" went with the lines after it
            text = text[:-1]
        if text != doc.text:  # an unchanged text keeps its tokens for the filters after this one
            doc.text = text
        if not doc.text:
            return "empty"
        if self.bad_words is not None and self.bad_words.search(doc.text.lower()):
            return "bad_words"
        return None
