"""The decontamination step of curation's filter units: after the filters, a document that
holds any n-gram of an evaluation task is removed (``mode=remove``, reason
``decontaminated:<task>``), or loses the matched spans and keeps the rest (``mode=redact``).

Redaction maps the matched grams' words back to the characters they came from (ngrams.py:
words_with_spans) and cuts each maximal run of overlapping matched grams out, from its first
word's first character to its last word's last character; a document left without a word is
removed. Brown et al. 2020 (appendix C) cut the grams and a 200-character window around them;
the window is left out here so that redaction removes only benchmark text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from data_pipeline.decontaminate.config import DecontaminateConfig
from data_pipeline.decontaminate.index import Match, TaskIndex
from data_pipeline.decontaminate.ngrams import normalized_words, word_hashes, words_with_spans
from data_pipeline.document import Document
from data_pipeline.filters.base import Filter


def matched_character_spans(match: Match, spans: np.ndarray) -> list[tuple[int, int]]:
    """The [start, end) characters of each maximal run of overlapping matched grams."""
    runs: list[tuple[int, int]] = []
    for first, last in sorted(zip(match.starts.tolist(), (match.starts + match.lengths - 1).tolist())):
        if runs and first <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(runs[-1][1], last))
        else:
            runs.append((first, last))
    return [(int(spans[first][0]), int(spans[last][1])) for first, last in runs]


def cut(text: str, spans: list[tuple[int, int]]) -> str:
    pieces, position = [], 0
    for start, end in spans:
        pieces.append(text[position:start])
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


class Decontaminator(Filter):
    name = "decontaminated"

    def __init__(self, config: DecontaminateConfig, index_dir: Path) -> None:
        super().__init__()
        self.config = config
        self.index = TaskIndex(index_dir)
        names = self.index.task_names
        # per task: documents with a match, items matched (their lines), examples
        self.documents_hit = dict.fromkeys(names, 0)
        self.items_hit: dict[str, set[int]] = {name: set() for name in names}
        self.examples: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        self.redacted = {"documents": 0, "characters": 0}

    def check(self, doc: Document) -> str | None:
        match = self.index.find(word_hashes(normalized_words(doc.text)))
        if not len(match.items):
            return None
        tasks = self.index.task_of(match.items)
        for task in np.unique(tasks).tolist():
            name = self.index.task_names[task]
            lines = sorted(set(np.asarray(self.index.lines[match.items[tasks == task]]).tolist()))
            self.documents_hit[name] += 1
            self.items_hit[name].update(lines)
            if len(self.examples[name]) < self.config.max_examples:
                self.examples[name].append({"document": doc.id, "items": lines[:10]})
        first_task = self.index.task_names[int(tasks.min())]
        if self.config.mode == "remove":
            return first_task
        _, spans = words_with_spans(doc.text)  # the same words, with their characters (4x slower: only on a match)
        redacted = cut(doc.text, matched_character_spans(match, spans))
        self.redacted["documents"] += 1
        self.redacted["characters"] += len(doc.text) - len(redacted)
        if not normalized_words(redacted):
            return first_task  # nothing but benchmark text
        doc.text = redacted
        return None

    def stats(self) -> dict[str, Any]:
        tasks = {
            task["name"]: {
                "documents": self.documents_hit[task["name"]],
                "items": sorted(self.items_hit[task["name"]]),
                "examples": self.examples[task["name"]],
                "task_items": task["items"],
                "too_short": task["too_short"],
            }
            for task in self.index.meta["tasks"]
        }
        return {**super().stats(), "tasks": tasks, "redacted": self.redacted}


def decontamination_filters(config: DecontaminateConfig, index_dir: Path) -> list[Filter]:
    """The decontamination step, if any tasks are configured (it runs after the filters)."""
    return [Decontaminator(config, index_dir)] if config.tasks else []
