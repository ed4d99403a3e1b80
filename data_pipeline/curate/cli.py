"""Curate raw text into clean, deduplicated shards.

    python -m data_pipeline.curate input=<path|glob|list> output_dir=<dir> [workers=N] [executor=local|slurm|ray] [...]

Every stage is a list of independent work units (io/units.py); a unit's stats are its
completion marker, so a rerun redoes only the units without one:
  filter    per input unit: read -> normalize -> filters -> survivors + dedup keys on disk
  buckets   per key partition (dedup.partitions, auto: from the input's size): candidate pairs,
            verified on the signatures, reduced to a forest
  clusters  once: connected components over the forests (on disk above dedup.cluster_rows)
            -> each unit's removal list
  quality   once, with filters.quality.keep_fraction: the units' score histograms -> the cut
  write     per input unit: survivors minus the quality cut and duplicates -> clean shards
  report    once: report.json, report.png and a summary table
With dedup and the quality cut off, filter writes the clean shards itself and report follows it.
Options: configs/curate.yaml, data_pipeline/curate/config.py and docs/curation.md.
"""

from __future__ import annotations

import json
import logging
import shutil
from functools import partial
from typing import Any

from data_pipeline.command import hydra_command
from data_pipeline.curate.config import RUNTIME_KEYS, CurateConfig
from data_pipeline.curate.dedup_stages import PartitionUnit, SingleUnit, buckets_unit, clusters_unit
from data_pipeline.curate.filter_stage import dedup_enabled, filter_unit, has_write_stage
from data_pipeline.curate.output_dir import CurateOutputDir
from data_pipeline.curate.partitions import AUTO, dedup_partitions
from data_pipeline.curate.quality_stage import STAGE as QUALITY
from data_pipeline.curate.quality_stage import quality_cut, quality_unit, ranks_by_quality
from data_pipeline.curate.report import build_report, format_summary
from data_pipeline.curate.report_chart import plot_curation_report
from data_pipeline.curate.write_stage import write_unit
from data_pipeline.decontaminate.index import build_index, task_digests
from data_pipeline.decontaminate.task_items import read_task_items
from data_pipeline.executors.build import build_executor
from data_pipeline.executors.config import EXECUTOR_KINDS
from data_pipeline.executors.stage import Stage, run_unit, unit_stats
from data_pipeline.executors.tasks import resolve_task
from data_pipeline.filters.bad_words import load_bad_words
from data_pipeline.filters.quality_model import cached_model
from data_pipeline.io.readers import resolve_inputs
from data_pipeline.io.units import InputUnit, split_into_units
from data_pipeline.io.writers import atomic_write_text

log = logging.getLogger("data_pipeline.curate")
STAGES = ("all", "filter", "buckets", "clusters", QUALITY, "write", "report")


def validate(config: CurateConfig) -> None:
    """Fail before any work on a setting that cannot work, naming it."""
    problems = []
    if config.stage not in STAGES:
        problems.append(f"stage={config.stage}: choose one of {', '.join(STAGES)}")
    if config.workers < 1:
        problems.append(f"workers={config.workers}: need at least 1")
    if config.unit_size_mb <= 0:
        problems.append(f"unit_size_mb={config.unit_size_mb}: need > 0")
    problems += config.output.problems() + config.filters.problems() + config.dedup.problems()
    if config.stage in ("buckets", "clusters") and not dedup_enabled(config):
        problems.append(f"stage={config.stage} with dedup.exact=false and dedup.near=false: there is no dedup to run")
    if config.stage == QUALITY and not ranks_by_quality(config):
        problems.append(
            f"stage={QUALITY} without filters.quality.keep_fraction: the quality filter decides in the filter stage"
        )
    if config.stage == "write" and not has_write_stage(config):
        problems.append(
            "stage=write without dedup or filters.quality.keep_fraction: stage=filter writes the clean shards"
        )
    problems += _filter_file_problems(config)
    if config.executor.kind not in EXECUTOR_KINDS:
        problems.append(f"executor={config.executor.kind}: choose one of {', '.join(EXECUTOR_KINDS)}")
    several_tasks = (config.num_tasks or 1) > 1
    if several_tasks and config.stage == "all":
        problems.append(
            f"num_tasks={config.num_tasks} with stage=all: tasks run one stage at a time (stage=filter, ...); "
            "or let executor=slurm submit every stage as a job array"
        )
    if several_tasks and config.executor.kind != "local":
        problems.append(
            f"num_tasks={config.num_tasks} with executor={config.executor.kind}: "
            "the executor splits the work itself; drop num_tasks"
        )
    problems += config.decontaminate.problems()
    for path in config.decontaminate.tasks:  # read here, before the run claims output_dir with the file's digest
        try:
            read_task_items(path)
        except (OSError, ValueError) as error:  # the message names the file and line
            problems.append(f"decontaminate.tasks: {error}")
    if problems:
        raise ValueError("invalid curate config:\n  " + "\n  ".join(problems))


def _filter_file_problems(config: CurateConfig) -> list[str]:
    """The quality model and the bad-words list, read once here so a bad file fails before any work."""
    problems = []
    quality, c4 = config.filters.quality, config.filters.c4
    for needed, read, name in (
        (quality.enabled, cached_model, quality.model),
        (c4.enabled and c4.bad_words is not None, load_bad_words, c4.bad_words),
    ):
        try:
            if needed:
                read(name)
        except (OSError, ValueError) as error:  # their messages name the setting and the file
            problems.append(str(error))
    return problems


def build_stages(config: CurateConfig, units: list[InputUnit], sources: int, partitions: int) -> list[Stage]:
    """The stages in order; each a list of units and the picklable function that does one;
    `partitions`: the key partitions of dedup (curate/partitions.py)."""
    layout = CurateOutputDir(config.output_dir)
    permutations = config.dedup.minhash.num_permutations if config.dedup.near else 0
    stages = [
        Stage("filter", units, partial(filter_unit, config=config, partitions=partitions), layout.markers("filter"))
    ]
    if dedup_enabled(config):
        unit_indices = [unit.index for unit in units]
        stages += [
            Stage(
                "buckets",
                [PartitionUnit(p) for p in range(partitions)],
                partial(buckets_unit, config=config, units=unit_indices, permutations=permutations),
                layout.markers("buckets"),
            ),
            Stage(
                "clusters",
                [SingleUnit()],
                partial(clusters_unit, config=config, partitions=partitions),
                layout.markers("clusters"),
            ),
        ]
    if ranks_by_quality(config):
        stages.append(
            Stage(QUALITY, [SingleUnit()], partial(quality_unit, config=config, units=units), layout.markers(QUALITY))
        )
    if has_write_stage(config):
        stages.append(
            Stage(
                "write", units, partial(write_unit, config=config, permutations=permutations), layout.markers("write")
            )
        )
    stages.append(
        Stage(
            "report",
            [SingleUnit()],
            partial(report_unit, config=config, units=units, sources=sources),
            layout.markers("report"),
        )
    )
    return stages


def report_unit(_: SingleUnit, config: CurateConfig, units: list[InputUnit], sources: int) -> dict[str, Any]:
    """Write report.json and report.png, then drop the intermediate files the report closes."""
    layout = CurateOutputDir(config.output_dir)

    write_stats = unit_stats(layout.markers("write"), units) if has_write_stage(config) else None
    report = build_report(unit_stats(layout.markers("filter"), units), write_stats, sources)
    if ranks_by_quality(config):
        report["quality_cut"] = quality_cut(layout)
    atomic_write_text(layout.report, json.dumps(report, indent=1))
    plot_curation_report(config.output_dir)
    for shard in (layout.work / "filter").glob("*.jsonl.zst"):
        shard.unlink()
    shutil.rmtree(layout.keys, ignore_errors=True)
    return {"documents_out": report["output"]["documents"]}


def run_curation(config: CurateConfig) -> dict[str, Any] | None:
    """Run the configured stage(s) (this task's share of them); returns the report once the
    whole run is done (None while units of other tasks or stages are still to come)."""
    validate(config)
    sources = resolve_inputs(config.input)
    units = split_into_units(sources, config.unit_size_mb, config.reader.hf)
    layout = CurateOutputDir(config.output_dir)
    layout.make_dirs()
    partitions = dedup_partitions(config.dedup, units) if dedup_enabled(config) else 0
    if config.dedup.partitions == AUTO and partitions:
        log.info("dedup.partitions=auto: %d (one per %g MB of input text)", partitions, config.dedup.partition_mb)
    # a model file rewritten under the same name is another run
    model = (
        {"quality_model_sha256": cached_model(config.filters.quality.model).header["sha256"]}
        if config.filters.quality.enabled
        else {}
    )
    task_files = task_digests(config.decontaminate.tasks)
    layout.claim(
        config,
        RUNTIME_KEYS,
        inputs=[str(unit) for unit in units],
        dedup_partitions=partitions,
        decontaminate_tasks=task_files,
        **model,
    )
    if config.decontaminate.tasks:
        build_index(config.decontaminate, layout.decontaminate)
    stages = build_stages(config, units, len(sources), partitions)
    names = [stage.name for stage in stages]
    if config.stage == "all":
        chosen = stages
    else:
        position = names.index(config.stage)
        for earlier in stages[:position]:
            if message := earlier.missing_message():
                raise RuntimeError(
                    f"stage={config.stage} needs the earlier stages finished: {message}; run stage={earlier.name} first"
                )
        chosen = [stages[position]]
    task = resolve_task(config.task_index, config.num_tasks)
    build_executor(config.executor, config.workers, config.progress, task, layout.work).run(chosen)
    report_stage = stages[-1]
    if report_stage.pending() and all(stage.missing_message() is None for stage in stages[:-1]):
        run_unit(report_stage, report_stage.units[0])  # the last task of a stage run by hand
    if report_stage.pending():
        log.info("task %d/%d done; the report is written when the last unit is done", task.index, task.count)
        return None
    report = json.loads(layout.report.read_text())
    print(format_summary(report))
    print(f"report: {layout.report} and {layout.root / 'report.png'}")
    return report


main = hydra_command("curate", CurateConfig, run_curation, log_format="%(asctime)s %(levelname)s %(message)s")
