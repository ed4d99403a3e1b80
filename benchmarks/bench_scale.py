"""Benchmark: peak memory of the largest work unit of every curation stage as the corpus grows
(a recorded run, not a test).

Generates a flat corpus of N documents (~500 bytes of random words each, 4% exact and 4% near
copies planted), cut into units of --unit-mb, with dedup.partitions=auto (one per 64 MB of
input) so that a partition's share stays the same. Every unit runs in a
fresh process; its peak RSS (ru_maxrss) and CPU time are recorded, two units at a time. Filters
are off: their memory is per document; the memory that could grow with the corpus is dedup's.

  .venv/bin/python benchmarks/bench_scale.py --docs 250000 1000000 --out bench-out/scale
  .venv/bin/python benchmarks/bench_scale.py --docs 1000000 --cluster-rows 50000   # clusters on disk
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import shutil
import time
from pathlib import Path

import numpy as np

from data_pipeline.curate.cli import build_stages
from data_pipeline.curate.config import CurateConfig
from data_pipeline.curate.output_dir import CurateOutputDir
from data_pipeline.curate.partitions import dedup_partitions
from data_pipeline.executors.stage import Stage, run_unit
from data_pipeline.io.readers import resolve_inputs
from data_pipeline.io.units import split_into_units

WORDS = np.array([f"w{i:05d}" for i in range(30_000)])


def generate(path: Path, docs: int, seed: int = 0, words_per_doc: int = 80) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "w") as out:
        for start in range(0, docs, 50_000):
            count = min(50_000, docs - start)
            words = WORDS[rng.integers(0, len(WORDS), size=(count, words_per_doc))]
            kind = rng.random(count)
            lines = []
            for row in range(count):
                if start + row > 100 and kind[row] < 0.08:  # a copy of an earlier document of this batch
                    source = words[rng.integers(0, row)] if row else words[row]
                    words[row] = source.copy()
                    if kind[row] < 0.04:  # near: two words changed
                        words[row][rng.integers(0, words_per_doc, size=2)] = "changed"
                lines.append(json.dumps({"text": " ".join(words[row])}) + "\n")
            out.writelines(lines)


def _peak_rss_mb() -> float:
    """This process's peak RSS. Not ru_maxrss: Linux carries it over from the parent across
    fork + exec, so a spawned child would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _measured(stage: Stage, unit, connection) -> None:
    run_unit(stage, unit)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    connection.send((_peak_rss_mb(), usage.ru_utime + usage.ru_stime))


def run_stage(stage: Stage, workers: int) -> dict:
    """Every pending unit in a fresh process, `workers` at once: the largest peak and the CPU time."""
    context = multiprocessing.get_context("spawn")
    todo, running, peaks, cpu = list(stage.pending()), [], [], 0.0
    while todo or running:
        while todo and len(running) < workers:
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=_measured, args=(stage, todo.pop(0), sender))
            process.start()
            running.append((process, receiver))
        process, receiver = running.pop(0)
        peak_mb, cpu_s = receiver.recv()
        process.join()
        if process.exitcode:
            raise RuntimeError(f"{stage.name}: a unit failed (exit code {process.exitcode})")
        peaks.append(peak_mb)
        cpu += cpu_s
    return {"units": len(peaks), "peak_rss_mb_largest_unit": round(max(peaks), 1), "cpu_s": round(cpu, 1)}


def measure(docs: int, out: Path, unit_mb: float, workers: int, cluster_rows: int | None) -> dict:
    corpus = out / f"corpus-{docs}" / "docs.jsonl"
    if not corpus.exists():
        corpus.parent.mkdir(parents=True, exist_ok=True)
        generate(corpus, docs)
    output_dir = out / f"curated-{docs}"
    shutil.rmtree(output_dir, ignore_errors=True)
    config = CurateConfig(input=str(corpus), output_dir=str(output_dir), unit_size_mb=unit_mb, progress=False)
    for name in ("normalize", "gopher_repetition", "gopher_quality", "c4", "language"):
        getattr(config.filters, name).enabled = False
    config.output.write_removed = False
    if cluster_rows is not None:
        config.dedup.cluster_rows = cluster_rows
    units = split_into_units(resolve_inputs(config.input), unit_mb, config.reader.hf)
    partitions = dedup_partitions(config.dedup, units)
    CurateOutputDir(output_dir).make_dirs()
    result = {
        "docs": docs,
        "corpus_mb": round(corpus.stat().st_size / 1e6, 1),
        "input_units": len(units),
        "partitions": partitions,
        "stages": {},
    }
    start = time.perf_counter()
    for stage in build_stages(config, units, 1, partitions):
        result["stages"][stage.name] = run_stage(stage, workers)
        print(json.dumps({"docs": docs, stage.name: result["stages"][stage.name]}), flush=True)  # progress
    result["wall_s"] = round(time.perf_counter() - start, 1)
    result["cpu_s"] = round(sum(stage["cpu_s"] for stage in result["stages"].values()), 1)
    report = json.loads((output_dir / "report.json").read_text())
    result["clusters_unit"] = json.loads(
        (CurateOutputDir(output_dir).markers("clusters") / "all.done.json").read_text()
    )  # on disk? steps
    result["clusters_unit"]["forest_rows"] = sum(
        json.loads(marker.read_text())["forest_rows"]
        for marker in CurateOutputDir(output_dir).markers("buckets").glob("*.done.json")
    )
    result["removed"] = {
        stage["stage"]: stage["removed"] for stage in report["stages"] if stage["stage"].startswith("dedup")
    }
    shutil.rmtree(output_dir)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, nargs="+", default=[250_000, 1_000_000, 4_000_000])
    parser.add_argument("--unit-mb", type=float, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="bench-out/scale")
    parser.add_argument("--cluster-rows", type=int, help="dedup.cluster_rows (small: the clusters unit runs on disk)")
    args = parser.parse_args()
    for docs in args.docs:
        print(json.dumps(measure(docs, Path(args.out), args.unit_mb, args.workers, args.cluster_rows)), flush=True)


if __name__ == "__main__":
    main()
