"""Bad input records (io/readers.py's BadInput): counted by reason, the first ones kept with
file and line for the report; under strict=true the first one stops the unit."""
from __future__ import annotations

from collections import Counter
from typing import Any

from data_pipeline.io.readers import BadInput

# bad records listed by file and line in the report, per input file (all are counted)
MAX_BAD_INPUT_EVENTS = 100


class BadInputError(ValueError):
    """A bad record under strict=true."""


class BadInputTally:
    """Counts bad records by reason and keeps the first ones with file and line."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.by_reason: Counter[str] = Counter()
        self.events: list[dict[str, Any]] = []

    def add(self, bad: BadInput) -> None:
        if self.strict:
            raise BadInputError(f"{bad} (strict=true stops at the first bad record; strict=false counts and skips them)")
        self.by_reason[bad.reason] += 1
        if len(self.events) < MAX_BAD_INPUT_EVENTS:
            self.events.append({"file": bad.file, "line": bad.line, "reason": bad.reason, "detail": bad.detail})

    def stats(self) -> dict[str, Any]:
        return {"count": sum(self.by_reason.values()), "by_reason": dict(self.by_reason), "events": self.events}
