"""executor=slurm: one job array per stage through submitit, each array after the previous
one (``afterok``), with per-stage resources. An array task takes every n-th pending unit of
its stage and runs them on cpus_per_task local worker processes; markers make a resubmission
redo only what is missing."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from data_pipeline.executors.config import SlurmConfig
from data_pipeline.executors.pool import UnitFailedError
from data_pipeline.executors.stage import Stage, run_units

log = logging.getLogger(__name__)
_RESOURCE_KEYS = ("partition", "account", "time_min", "cpus_per_task", "mem_gb", "max_array_tasks", "array_parallelism")


def stage_resources(config: SlurmConfig, stage: str) -> dict[str, Any]:
    """The settings for one stage: the defaults, then executor.slurm.stages.<stage>."""
    resources = {key: getattr(config, key) for key in _RESOURCE_KEYS}
    overrides = dict(config.stages.get(stage) or {})
    unknown = sorted(set(overrides) - set(_RESOURCE_KEYS))
    if unknown:
        raise ValueError(
            f"executor.slurm.stages.{stage}: unknown setting {unknown[0]}; choose from {', '.join(_RESOURCE_KEYS)}"
        )
    return resources | overrides


def submitit_parameters(
    resources: dict[str, Any], stage: str, additional: dict[str, Any], dependency: str | None
) -> dict[str, Any]:
    """submitit's AutoExecutor parameters for a stage (slurm_* ones reach sbatch only)."""
    parameters: dict[str, Any] = {
        "name": f"curate-{stage}",
        "timeout_min": int(resources["time_min"]),
        "cpus_per_task": int(resources["cpus_per_task"]),
        "mem_gb": resources["mem_gb"],
        "slurm_array_parallelism": int(resources["array_parallelism"]),
    }
    if resources["partition"]:
        parameters["slurm_partition"] = resources["partition"]
    if resources["account"]:
        parameters["slurm_account"] = resources["account"]
    extra = dict(additional)
    if dependency:
        # a failed stage cancels the arrays after it instead of leaving them pending forever
        extra.update(dependency=dependency, kill_on_invalid_dep="yes")
    if extra:
        parameters["slurm_additional_parameters"] = extra
    return parameters


class SlurmExecutor:
    def __init__(self, config: SlurmConfig, folder: Path) -> None:
        self.config = config
        self.folder = folder

    def run(self, stages: Sequence[Stage]) -> None:
        import submitit

        executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.config.cluster)
        # sbatch dependencies chain the arrays; submitit's local executor has none, so there
        # each stage is awaited before the next is submitted
        chained = executor.cluster == "slurm"
        submitted: list[tuple[Stage, list, list[list]]] = []
        for stage in stages:
            todo = stage.pending()
            if not todo:
                continue
            resources = stage_resources(self.config, stage.name)
            dependency = f"afterok:{array_id(submitted[-1][1])}" if chained and submitted else None
            executor.update_parameters(
                **submitit_parameters(resources, stage.name, self.config.additional_parameters, dependency)
            )
            tasks = min(len(todo), int(resources["max_array_tasks"]))
            shares = [todo[task::tasks] for task in range(tasks)]
            jobs = executor.map_array(run_units, [stage] * tasks, shares, [int(resources["cpus_per_task"])] * tasks)
            log.info("%s: %d units in %d array tasks, job %s", stage.name, len(todo), tasks, array_id(jobs))
            submitted.append((stage, jobs, shares))
            if not chained:
                self._wait(*submitted[-1])
        if chained and self.config.wait:
            for stage, jobs, shares in submitted:
                self._wait(stage, jobs, shares)

    @staticmethod
    def _wait(stage: Stage, jobs: list, shares: list[list]) -> None:
        for job, share in zip(jobs, shares):
            try:
                job.result()
            except Exception as error:  # submitit raises FailedJobError / UncompletedJobError
                units = ", ".join(map(str, share[:3])) + (" ..." if len(share) > 3 else "")
                raise UnitFailedError(
                    f"{stage.name}: Slurm job {job.job_id} ({units}) failed; log: {job.paths.stderr}\n{error}"
                ) from None


def array_id(jobs: list) -> str:
    """The job id of an array ("123" of "123_4")."""
    return str(jobs[0].job_id).split("_")[0]
