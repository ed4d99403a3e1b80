"""Curate raw text into clean, deduplicated shards.

    python -m data_pipeline.curate input=<path|glob|list> output_dir=<dir> [workers=N] [...]

Three stages, each resumable (a finished file or stage has a marker and is not redone):
  filter  per input file: read -> normalize -> filters -> survivors + dedup keys
  dedup   once, over all files: duplicate clusters across the whole corpus
  write   per input file: survivors minus duplicates -> clean shards
then report.json and a summary table. With dedup off, filter writes the clean shards itself.
Options: configs/curate.yaml, data_pipeline/curate/config.py and docs/curation.md.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from functools import partial
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from data_pipeline.curate.config import RUNTIME_KEYS, CurateConfig
from data_pipeline.curate.layout import Layout
from data_pipeline.io.readers import InputSource, resolve_inputs
from data_pipeline.curate.report import build_report, format_summary
from data_pipeline.curate.report_chart import plot_curation_report
from data_pipeline.stage_dedup import deduplicate
from data_pipeline.curate.filter_stage import dedup_enabled, filter_source
from data_pipeline.curate.write_stage import write_source
from data_pipeline.executors.tasks import Task, resolve_task, run_jobs, wait_for
from data_pipeline.io.writers import atomic_write_text

log = logging.getLogger("data_pipeline.curate")
STAGES = ("all", "filter", "dedup", "write")


def validate(config: CurateConfig) -> None:
    """Fail before any work on a setting that cannot work, naming it."""
    problems = []
    if config.stage not in STAGES:
        problems.append(f"stage={config.stage}: choose one of {', '.join(STAGES)}")
    if config.workers < 1:
        problems.append(f"workers={config.workers}: need at least 1")
    if config.output.shard_size_mb <= 0:
        problems.append(f"output.shard_size_mb={config.output.shard_size_mb}: need > 0")
    form = config.filters.normalize.unicode_form
    if form is not None and form not in ("NFC", "NFKC", "NFD", "NFKD"):
        problems.append(f"filters.normalize.unicode_form={form}: choose NFC, NFKC, NFD, NFKD or null")
    if not 0 <= config.filters.language.min_score <= 1:
        problems.append(f"filters.language.min_score={config.filters.language.min_score}: need a score in [0, 1]")
    minhash = config.dedup.minhash
    if config.dedup.near and min(minhash.ngram_size, minhash.num_bands, minhash.rows_per_band) < 1:
        problems.append(f"dedup.minhash={minhash}: ngram_size, num_bands and rows_per_band must be >= 1")
    if config.stage in ("dedup", "write") and not dedup_enabled(config):
        problems.append(f"stage={config.stage} with dedup.exact=false and dedup.near=false: only stage=filter has work")
    if problems:
        raise ValueError("invalid curate config:\n  " + "\n  ".join(problems))


def run_curation(config: CurateConfig) -> dict[str, Any] | None:
    """Run this task's share of the configured stage(s); returns the report once every task's
    work is done (None while other tasks still have files to finish)."""
    validate(config)
    sources = resolve_inputs(config.input)
    task = resolve_task(config.task_index, config.num_tasks)
    layout = Layout(config.output_dir)
    layout.make_dirs()
    _claim_output_dir(layout, config, sources)
    dedup = dedup_enabled(config)
    mine = task.owns(sources)
    if config.stage in ("all", "filter"):
        todo = [s for s in mine if not layout.filter_stats(s.index).exists()]
        _run(filter_source, todo, config, f"filter (task {task.index}/{task.count})")
    if dedup and config.stage in ("all", "dedup"):
        _dedup_once(layout, sources, task, config)
    if dedup and config.stage in ("all", "write"):
        if config.stage == "all":
            wait_for([layout.dedup_stats], config.wait_timeout_s, "the dedup stage")
        elif not layout.dedup_stats.exists():
            raise RuntimeError(f"stage=write needs the dedup stage finished ({layout.dedup_stats} is missing): run stage=dedup first")
        todo = [s for s in mine if not layout.write_stats(s.index).exists()]
        _run(write_source, todo, config, f"write (task {task.index}/{task.count})")
    final_markers = [layout.write_stats(s.index) if dedup else layout.filter_stats(s.index) for s in sources]
    if not all(marker.exists() for marker in final_markers):
        log.info("task %d/%d done; the report is written when the last task finishes", task.index, task.count)
        return None
    report = build_report(layout, sources, dedup)
    atomic_write_text(layout.report, json.dumps(report, indent=1))
    chart = plot_curation_report(config.output_dir)
    print(format_summary(report))
    print(f"report: {layout.report} and {chart}")
    return report


def _run(stage_function, sources: list[InputSource], config: CurateConfig, description: str) -> None:
    run_jobs(partial(stage_function, config=config), sources, config.workers, config.progress, description)


def _dedup_once(layout: Layout, sources: list[InputSource], task: Task, config: CurateConfig) -> None:
    """The dedup stage needs every file's keys. Under stage=all, task 0 waits for the other
    tasks, runs it, and the others wait for it; stage=dedup expects the filter stage done."""
    filter_markers = [layout.filter_stats(s.index) for s in sources]
    if layout.dedup_stats.exists():
        return
    if config.stage == "dedup":
        missing = [s.name for s, marker in zip(sources, filter_markers) if not marker.exists()]
        if missing:
            raise RuntimeError(f"stage=dedup needs the filter stage finished; not yet for {len(missing)} files, e.g. {missing[0]}")
    elif task.index != 0:
        return
    wait_for(filter_markers, config.wait_timeout_s, "the filter stage of every task")
    log.info("dedup over %d files", len(sources))
    stats = deduplicate(sources, config)
    log.info("dedup removed %(exact)d exact and %(near)d near duplicates", stats["removed"])


def _claim_output_dir(layout: Layout, config: CurateConfig, sources: list[InputSource]) -> None:
    """Resume only what the same config over the same inputs started: anything else would
    mix two runs' files in one output."""
    settings = OmegaConf.to_container(OmegaConf.structured(config))
    for key in RUNTIME_KEYS:
        settings.pop(key)
    # through JSON, as stored: integer keys (n-gram sizes) become strings
    run = json.loads(json.dumps({"config": settings, "inputs": [source.name for source in sources]}))
    if layout.run_file.exists():
        previous = json.loads(layout.run_file.read_text())
        if previous != run:
            changed = [key for key in run if previous.get(key) != run[key]]
            detail = _changed_settings(previous.get("config", {}), run["config"]) if "config" in changed else "the input files"
            raise ValueError(
                f"output_dir={config.output_dir} holds a run with other settings ({detail}); "
                "use a new output_dir, or delete this one to start over"
            )
    else:
        atomic_write_text(layout.run_file, json.dumps(run, indent=1))


def _changed_settings(before: dict, after: dict, prefix: str = "") -> str:
    changed = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            inner = _changed_settings(old, new, f"{prefix}{key}.")
            changed += [inner] if inner else []
        elif old != new:
            changed.append(f"{prefix}{key}: {old} -> {new}")
    return ", ".join(changed)


@hydra.main(config_path=str(Path(__file__).resolve().parents[2] / "configs"), config_name="curate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config: CurateConfig = OmegaConf.to_object(cfg)
    run_curation(config)

