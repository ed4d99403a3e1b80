"""The text of every item of an evaluation task file, as decontamination and the
contamination audit of evaluation see it.

A ``.jsonl`` file holds one item per line: pretrain.evaluate's multiple choice
(``{"context", "choices", "label"}``), generation (``{"prompt", "reference"|"references"}``)
and perplexity (``{"text"}``) records, or lm-evaluation-harness style records. An item's text
is, in this order, every string among the question fields (``QUESTION_FIELDS``), then its
answer: the right choice (``choices[label]``, ``label`` also read as ``gold`` or an integer
``answer``) or the strings among ``ANSWER_FIELDS`` (a list of strings counts each). Wrong
choices are left out: they are not the benchmark's text a model could have memorized as an
answer. Any other file is one item: its whole text (pretrain.evaluate's perplexity text file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_pipeline.formats.jsonl import read_jsonl

QUESTION_FIELDS = ("context", "ctx", "question", "query", "prompt", "passage", "text")
ANSWER_FIELDS = ("answer", "target", "reference", "references")
LABEL_FIELDS = ("label", "gold", "answer")


@dataclass(frozen=True)
class TaskItem:
    line: int  # 1-based line of the task file (1 for a whole-file item)
    text: str


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        return list(value)
    return []


def _choices(record: dict[str, Any]) -> list[str]:
    choices = record.get("choices")
    if isinstance(choices, dict):  # ARC on the hub: {"text": [...], "label": [...]}
        choices = choices.get("text")
    return _strings(choices)


def record_text(record: dict[str, Any]) -> str:
    """The item's text (empty when the record has none of the fields read)."""
    parts = [part for name in QUESTION_FIELDS for part in _strings(record.get(name))]
    choices = _choices(record)
    label = next(
        (
            record[name]
            for name in LABEL_FIELDS
            if isinstance(record.get(name), int) and not isinstance(record[name], bool)
        ),
        None,
    )
    if choices and label is not None and 0 <= label < len(choices):
        parts.append(choices[label])
    else:
        parts += [part for name in ANSWER_FIELDS for part in _strings(record.get(name))]
    return " ".join(parts)


def read_task_items(path: str | Path) -> list[TaskItem]:
    """Every item of the task file; a missing or empty file or a bad line is an error
    naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such task file (decontaminate.tasks / the evaluation task's path)")
    if path.suffix != ".jsonl":
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise ValueError(f"{path}: the task file is empty")
        return [TaskItem(1, text)]
    items = []
    for number, record in read_jsonl(path):
        text = record_text(record)
        if not text.strip():
            fields = ", ".join(QUESTION_FIELDS + ANSWER_FIELDS)
            raise ValueError(f"{path}:{number}: no text to check; a task record needs a string in one of {fields}")
        items.append(TaskItem(number, text))
    if not items:
        raise ValueError(f"{path}: the task file is empty (no JSON lines)")
    return items
