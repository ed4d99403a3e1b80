"""The executor that ``executor.kind`` names."""

from __future__ import annotations

from pathlib import Path

from data_pipeline.executors.config import ExecutorConfig
from data_pipeline.executors.local import LocalExecutor
from data_pipeline.executors.tasks import Task


def build_executor(config: ExecutorConfig, workers: int, progress: bool, task: Task, work_dir: Path):
    if config.kind == "slurm":
        from data_pipeline.executors.slurm import SlurmExecutor

        return SlurmExecutor(config.slurm, work_dir / "slurm")
    if config.kind == "ray":
        from data_pipeline.executors.ray_tasks import RayExecutor

        return RayExecutor(config.ray)
    return LocalExecutor(workers, progress, task)
