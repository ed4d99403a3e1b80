"""executor=local: every stage in turn, its pending units on `workers` processes here."""

from __future__ import annotations

from typing import Sequence

from data_pipeline.executors.pool import run_unordered
from data_pipeline.executors.stage import Stage, UnitCall, describe_unit
from data_pipeline.executors.tasks import Task
from data_pipeline.progress import progress_bar

ALL_UNITS = Task(0, 1)  # one task owns every unit


class LocalExecutor:
    def __init__(self, workers: int, progress: bool, task: Task = ALL_UNITS) -> None:
        self.workers = workers
        self.progress = progress
        self.task = task  # a share of every stage's units, for array jobs submitted by hand

    def run(self, stages: Sequence[Stage]) -> None:
        for stage in stages:
            mine = set(self.task.owns(stage.units))
            todo = [unit for unit in stage.pending() if unit in mine]
            description = f"{stage.name} (task {self.task.index}/{self.task.count})"
            with progress_bar(
                total=len(todo), desc=description, unit="unit", disable=not self.progress or not todo
            ) as bar:
                for _ in run_unordered(UnitCall(stage), todo, self.workers, describe=describe_unit(stage)):
                    bar.update()
