"""report.json's ``decontamination`` section, from the decontamination stats of every filter
unit (in unit order, so the examples are the same for any number of units and workers)."""

from __future__ import annotations

from typing import Any, Sequence

# (document, items) pairs listed per task, at most (decontaminate.max_examples caps each unit's)
MAX_EXAMPLES = 100


def decontamination_report(unit_stats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per task: the documents that held its text, how many of its items they matched and
    which (item = line of the task file), with examples; and what redaction cut."""
    tasks: dict[str, dict[str, Any]] = {}
    for stats in unit_stats:
        for name, hits in stats["tasks"].items():
            task = tasks.setdefault(
                name,
                {
                    "documents": 0,
                    "items": set(),
                    "examples": [],
                    "task_items": hits["task_items"],
                    "too_short": hits["too_short"],
                },
            )
            task["documents"] += hits["documents"]
            task["items"].update(hits["items"])
            task["examples"] += hits["examples"][: MAX_EXAMPLES - len(task["examples"])]
    return {
        "tasks": {
            name: {
                "items": task["task_items"],
                "items_too_short": task["too_short"],
                "documents": task["documents"],
                "items_matched": len(task["items"]),
                "item_lines": sorted(task["items"])[:MAX_EXAMPLES],
                "examples": task["examples"],
            }
            for name, task in tasks.items()
        },
        "redacted_documents": sum(stats["redacted"]["documents"] for stats in unit_stats),
        "redacted_characters": sum(stats["redacted"]["characters"] for stats in unit_stats),
    }
