"""This task's share of a stage's units, when array jobs are submitted by hand."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Sequence, TypeVar

Item = TypeVar("Item")


@dataclass(frozen=True)
class Task:
    index: int
    count: int

    def owns(self, items: Sequence[Item]) -> list[Item]:
        """Every count-th item from index: balanced, and the same for every run of this task."""
        return list(items[self.index :: self.count])


def resolve_task(index: int | None, count: int | None, environ: Mapping[str, str] = os.environ) -> Task:
    """task_index/num_tasks as configured, else from a Slurm array or torchrun, else 0 of 1."""
    if index is None and count is None:
        if "SLURM_ARRAY_TASK_ID" in environ:
            # array indices may start anywhere (--array=1-8): count from the first
            first = int(environ.get("SLURM_ARRAY_TASK_MIN", 0))
            index, count = int(environ["SLURM_ARRAY_TASK_ID"]) - first, int(environ["SLURM_ARRAY_TASK_COUNT"])
        elif "RANK" in environ and "WORLD_SIZE" in environ:
            index, count = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        else:
            index, count = 0, 1
    if index is None or count is None:
        raise ValueError(f"task_index={index} num_tasks={count}: set both or neither")
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"task_index={index} num_tasks={count}: need 0 <= task_index < num_tasks")
    return Task(index, count)
