"""How much of an evaluation task the model saw in training: each item of the task is checked
against the n-gram fingerprint that ``data_pipeline.tokenize`` wrote beside the training token
shards (data_pipeline/decontaminate/fingerprint.py). An item is contaminated when one of its
word n-grams (the GPT-3 normalization, Brown et al. 2020 appendix C) is in the train split;
its text is the one decontamination reads (data_pipeline/decontaminate/task_items.py: the
question and the right answer). An item of fewer than n words has no n-gram and counts as clean.

Reported beside every score (but perplexity over token shards): ``<task>/contamination`` (the
fraction of contaminated items; NaN, shown as "unknown", when the run's data has no
fingerprint) and the score on the clean items alone (``<task>/clean_<metric>``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from data_pipeline.decontaminate.fingerprint import FINGERPRINT_META, Fingerprint
from data_pipeline.decontaminate.task_items import read_task_items
from pretrain.evaluation.tasks import TaskConfig, TaskType

log = logging.getLogger(__name__)
UNKNOWN = float("nan")
CONTAMINATION = "contamination"


def training_paths(data: Any) -> list[str]:
    """The token directories of a run's ``data`` config (the dataclass or its saved dict)."""
    get = data.get if isinstance(data, Mapping) else (lambda key: getattr(data, key, None))
    sources = get("sources") or []
    return ([get("path")] if get("path") else []) + [
        source["path"] if isinstance(source, Mapping) else source.path for source in sources
    ]


class TrainingData:
    """The fingerprints of every token directory a run trained on; unknown when one has none."""

    def __init__(self, data: Any) -> None:
        self.paths = training_paths(data)
        found = [Fingerprint.find(path) if Path(path).is_dir() else None for path in self.paths]
        self.fingerprints: Optional[list[Fingerprint]] = found if found and all(found) else None  # type: ignore[assignment]
        self._clean: dict[str, Optional[np.ndarray]] = {}  # by task label: in-loop evaluation checks each task once
        if self.fingerprints is None:
            log.warning(
                "contamination: unknown (no %s beside the token shards of %s; tokenize with data_pipeline.tokenize "
                "to get one)",
                FINGERPRINT_META,
                ", ".join(self.paths) or "the run's data",
            )

    @staticmethod
    def audits(task: TaskConfig) -> bool:
        """Perplexity over token shards is not audited: its documents are the val split of the
        training corpus itself (their overlap with train is dedup's business), and tokens have no words."""
        return not Path(task.path).is_dir()

    def clean_items(self, task: TaskConfig) -> Optional[np.ndarray]:
        """Per item the runner scores: True when no n-gram of it is in the training data;
        None when that cannot be known."""
        if self.fingerprints is None or not self.audits(task):
            return None
        if task.label not in self._clean:
            texts = [item.text for item in read_task_items(task.path)]
            if task.type is not TaskType.perplexity:  # its limit counts windows, not items
                texts = texts[: task.limit]
            fingerprints = self.fingerprints
            self._clean[task.label] = np.asarray(
                [not any(print_.overlaps(text) for print_ in fingerprints) for text in texts], dtype=bool
            )
        return self._clean[task.label]


def clean_metrics(
    score: Callable[..., dict[str, float]], clean: Sequence[bool], *columns: Sequence[Any]
) -> dict[str, float]:
    """``score`` of the clean items alone (each column: one value per item), as clean_<metric>."""
    kept = [[value for value, keep in zip(column, clean) if keep] for column in columns]
    if not kept or not kept[0]:
        return {"clean_examples": 0.0}
    return {f"clean_{name}": value for name, value in score(*kept).items()}


def contamination_metric(clean: Optional[np.ndarray]) -> float:
    return UNKNOWN if clean is None else float(1 - clean.mean()) if len(clean) else 0.0
