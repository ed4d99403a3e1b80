"""What every filter is: one job, a name, and counters of what it removed and why."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from typing import Any, ClassVar

from data_pipeline.document import Document


class Filter(ABC):
    """Call a filter on a document: it returns None to keep it (possibly with a rewritten
    text) or the name of the rule that removes it."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self.seen = 0
        self.removed: Counter[str] = Counter()

    def __call__(self, doc: Document) -> str | None:
        self.seen += 1
        reason = self.check(doc)
        if reason is not None:
            self.removed[reason] += 1
        return reason

    def stats(self) -> dict[str, Any]:
        return {"seen": self.seen, "removed": dict(self.removed)}

    @abstractmethod
    def check(self, doc: Document) -> str | None:
        """The reason to remove ``doc``, or None to keep it."""


def exceeds(value: float, limit: float | None) -> bool:
    """A rule with a null limit is switched off."""
    return limit is not None and value > limit


def falls_short(value: float, limit: float | None) -> bool:
    return limit is not None and value < limit
