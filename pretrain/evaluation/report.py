"""Evaluation results: a JSON file for tools and a table for people."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def format_table(metrics: dict[str, float]) -> str:
    rows = [key.rsplit("/", 1) for key in metrics]
    task_width = max([len("task")] + [len(task) for task, _ in rows])
    metric_width = max([len("metric")] + [len(metric) for _, metric in rows])
    lines = [f"{'task':<{task_width}}  {'metric':<{metric_width}}  value", "-" * (task_width + metric_width + 14)]
    for (task, metric), value in zip(rows, metrics.values()):
        lines.append(f"{task:<{task_width}}  {metric:<{metric_width}}  {value:.4f}")
    return "\n".join(lines)


def write_results(path: Path, metrics: dict[str, float], details: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({**details, "metrics": metrics}, indent=2, allow_nan=True) + "\n")
    tmp.replace(path)
