"""The schema of ``configs/curate.yaml``, composed of the settings each stage defines beside its
code (reader and output: io/config.py; filters: filters/chain.py, each filter's own beside it;
decontaminate/config.py; dedup/config.py; executors/config.py); data_pipeline/command.py
registers it as Hydra's schema, so a misspelt override is an error.

Filter defaults follow the papers (Gopher: Rae et al. 2021, appendix A1.1; C4: Raffel et al.
2020, section 2.2; see each filter's module). Normalization is lossless for whitespace by
default. A threshold set to null switches that one rule off; ``enabled: false`` switches a
whole stage off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from data_pipeline.decontaminate.config import DecontaminateConfig
from data_pipeline.dedup.config import DedupConfig
from data_pipeline.executors.config import ExecutorConfig
from data_pipeline.filters.chain import FiltersConfig
from data_pipeline.io.config import OutputConfig, ReaderConfig


@dataclass
class CurateConfig:
    input: Any = MISSING  # a path, a glob, a folder, "hf:<dataset>", or a list of those
    output_dir: str = MISSING
    # all: every stage in turn; filter | buckets | clusters | quality | write | report: one stage (for
    # array jobs submitted by hand; executor=slurm submits every stage itself)
    stage: str = "all"
    workers: int = 1  # processes on this machine (on each Slurm task: executor.slurm.cpus_per_task)
    # Work units: an uncompressed JSON-lines file is cut into byte ranges and a parquet file
    # into runs of row groups of about this size; compressed files are one unit each.
    unit_size_mb: float = 256
    # With a single stage: this task's share of its units; null: from SLURM_ARRAY_TASK_ID/COUNT
    # or RANK/WORLD_SIZE when set, else a single task.
    task_index: Optional[int] = None
    num_tasks: Optional[int] = None
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    strict: bool = False  # the first bad input record fails the run
    progress: bool = True
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    # after the filters, before dedup: evaluation task text out of the training data
    decontaminate: DecontaminateConfig = field(default_factory=DecontaminateConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


# The settings that may change between runs over one output_dir without changing the result.
# dedup.cluster_rows: after the clusters unit ran out of memory, a lower one finishes the run.
RUNTIME_KEYS = ("stage", "workers", "task_index", "num_tasks", "executor", "strict", "progress", "dedup.cluster_rows")
