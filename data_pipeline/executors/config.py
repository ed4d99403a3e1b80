"""How work units run: ``executor=local|slurm|ray`` (configs/executor/*.yaml) and each one's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class SlurmConfig:
    """One Slurm job array per stage, each after the previous one (afterok), via submitit."""

    # slurm: submit with sbatch. local: submitit's local executor runs the same arrays as local
    # processes, one stage after the other (its jobs cannot depend on each other); for tests.
    cluster: str = "slurm"
    partition: Optional[str] = None
    account: Optional[str] = None
    time_min: int = 24 * 60
    cpus_per_task: int = 8  # also the worker processes of each array task
    mem_gb: float = 16
    max_array_tasks: int = 256  # array tasks per stage at most; each takes every n-th unit
    array_parallelism: int = 256  # array tasks running at once at most
    # Per-stage overrides of the settings above, e.g. {clusters: {mem_gb: 64, cpus_per_task: 1}}.
    stages: dict[str, Any] = field(default_factory=dict)
    # Passed to sbatch as is (submitit's slurm_additional_parameters), e.g. {qos: high}.
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    wait: bool = True  # stay until the last stage ends (false: submit and return)


@dataclass
class RayConfig:
    address: Optional[str] = None  # a running cluster ("auto", "ray://host:10001"); null: start a local Ray
    num_cpus: Optional[int] = None  # CPUs of the local Ray this command starts (null: all)
    cpus_per_task: float = 1


@dataclass
class ExecutorConfig:
    kind: str = "local"  # local | slurm | ray (set with executor=slurm)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    ray: RayConfig = field(default_factory=RayConfig)


EXECUTOR_KINDS = ("local", "slurm", "ray")
