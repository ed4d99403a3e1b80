"""Evaluation results: a JSON file for tools and a table for people."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def format_table(metrics: dict[str, float]) -> str:
    rows = [key.rsplit("/", 1) for key in metrics]
    task_width = max([len("task")] + [len(task) for task, _ in rows])
    metric_width = max([len("metric")] + [len(metric) for _, metric in rows])
    lines = [f"{'task':<{task_width}}  {'metric':<{metric_width}}  value", "-" * (task_width + metric_width + 14)]
    for (task, metric), value in zip(rows, metrics.values()):
        shown = "unknown" if metric == "contamination" and math.isnan(value) else f"{value:.4f}"
        lines.append(f"{task:<{task_width}}  {metric:<{metric_width}}  {shown}")
    return "\n".join(lines)


def write_results(path: Path, metrics: dict[str, float], tasks: dict[str, Any], details: dict[str, Any]) -> None:
    """Results are kept per task: evaluating other tasks later adds theirs to the file,
    evaluating a task again replaces only its own. ``tasks``: each task's settings by label."""
    earlier = json.loads(path.read_text()) if path.exists() else {}
    merged_tasks = {**earlier.get("tasks", {}), **tasks}
    merged_metrics = {
        key: value for key, value in earlier.get("metrics", {}).items() if key.rsplit("/", 1)[0] not in tasks
    }
    merged_metrics.update(metrics)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    record = {**details, "tasks": merged_tasks, "metrics": merged_metrics}
    tmp.write_text(json.dumps(record, indent=2, allow_nan=True) + "\n")
    tmp.replace(path)
