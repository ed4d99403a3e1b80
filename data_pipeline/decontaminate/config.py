"""``decontaminate.*`` of ``configs/curate.yaml``: which evaluation tasks to keep out of the
training data, and how (docs/curation.md, "Decontamination")."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data_pipeline.decontaminate.ngrams import DEFAULT_NGRAM

MODES = ("remove", "redact")


@dataclass
class DecontaminateConfig:
    # Task files: pretrain.evaluate's (multiple choice, generation, perplexity .jsonl or text)
    # or lm-evaluation-harness style JSON lines (the fields read: decontaminate/task_items.py).
    # Empty: no decontamination.
    tasks: list[str] = field(default_factory=list)
    ngram: int = DEFAULT_NGRAM  # words per gram (Brown et al. 2020, appendix C: 13)
    # An item of fewer than `ngram` words is one gram of its whole text; one of fewer than
    # min_words words is not checked (a few words match too much unrelated text; GPT-3's
    # shortest gram is 8 words).
    min_words: int = 8
    # remove: drop a document holding any task gram (reason decontaminated:<task>);
    # redact: cut the matched spans out of it and keep the rest.
    mode: str = "remove"
    max_examples: int = 20  # (document, item) pairs listed per task in report.json

    def problems(self) -> list[str]:
        """What is wrong with these settings, one line each (empty when they are fine)."""
        problems = []
        if self.mode not in MODES:
            problems.append(f"decontaminate.mode={self.mode}: choose remove or redact")
        if self.ngram < 1:
            problems.append(f"decontaminate.ngram={self.ngram}: need >= 1 words per gram")
        if not 1 <= self.min_words <= self.ngram:
            problems.append(f"decontaminate.min_words={self.min_words}: need 1 <= min_words <= ngram ({self.ngram})")
        if self.max_examples < 0:
            problems.append(f"decontaminate.max_examples={self.max_examples}: need >= 0")
        names = [Path(path).stem for path in self.tasks]
        if len(set(names)) < len(names):
            problems.append(
                f"decontaminate.tasks={list(self.tasks)}: two task files share a name; "
                "the report names tasks by file name"
            )
        return problems
