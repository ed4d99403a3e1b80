"""Benchmark of the curation pipeline on the shared corpus (not a test; minutes of CPU).

    .venv/bin/python benchmarks/bench_curate.py --corpus ../shared/corpus \\
        --datatrove-kept /tmp/dt-filt/kept --out /tmp/bench-curate

Runs `python -m data_pipeline.curate` on corpus/pile/*.jsonl.zst with 1 and 2 workers,
filters only and full pipeline (filters + exact + MinHash dedup), and reports wall seconds,
CPU seconds of the whole process tree and MB of input text per CPU-second (the stable figure
on a shared machine). With --datatrove-kept (the kept/ folder that
../shared/anchors/bench_datatrove_filters.py writes), it also measures how often our filters'
keep/drop decision agrees with datatrove's, with our default alpha-ratio rule and with
datatrove's (filters.gopher_quality.alpha_ratio_counts_punctuation=true), and lists the rules
behind the disagreements. Never run it beside another benchmark on a 2-core machine.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_pipeline.io.lines import iter_lines  # noqa: E402
from data_pipeline.io.writers import iter_shard  # noqa: E402

FILTERS_ONLY = ["dedup.exact=false", "dedup.near=false"]
DATATROVE_ALPHA_RULE = ["filters.gopher_quality.alpha_ratio_counts_punctuation=true"]


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_curate(name: str, corpus: Path, out: Path, workers: int, overrides: list[str]) -> dict:
    output_dir = out / name
    shutil.rmtree(output_dir, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "data_pipeline.curate",
        f"input={corpus / 'pile'}",
        f"output_dir={output_dir}",
        f"workers={workers}",
        "progress=false",
        *overrides,
    ]
    cpu_before, start = children_cpu_seconds(), time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    wall, cpu = time.perf_counter() - start, children_cpu_seconds() - cpu_before
    report = json.loads((output_dir / "report.json").read_text())
    megabytes = report["input"]["bytes"] / 1e6
    result = {
        "run": name,
        "workers": workers,
        "overrides": overrides,
        "input_mb": round(megabytes, 1),
        "docs_in": report["input"]["documents"],
        "docs_out": report["output"]["documents"],
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "mb_per_s": round(megabytes / wall, 2),
        "mb_per_cpu_s": round(megabytes / cpu, 2),
        "removed": {stage["stage"]: stage["removed"] for stage in report["stages"]},
    }
    print(json.dumps(result), flush=True)
    return result


def corpus_ids(corpus: Path) -> list[str]:
    return [
        json.loads(line)["meta"]["id"]
        for path in sorted((corpus / "pile").glob("*.jsonl.zst"))
        for line in iter_lines(str(path))
    ]


def datatrove_kept_ids(kept_dir: Path) -> set[str]:
    ids = set()
    for path in kept_dir.glob("*.jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as file:
            ids.update(json.loads(line)["id"] for line in file)
    return ids


def our_decisions(output_dir: Path) -> tuple[set[str], dict[str, str]]:
    kept = {record["id"] for path in output_dir.glob("part-*.jsonl.zst") for record in iter_shard(path)}
    reasons = {
        record["id"]: record["reason"]
        for path in (output_dir / "removed").glob("filter-*.jsonl.zst")
        for record in iter_shard(path)
        if "id" in record
    }
    return kept, reasons


def agreement(name: str, output_dir: Path, all_ids: list[str], theirs: set[str]) -> dict:
    ours, our_reasons = our_decisions(output_dir)
    agree = sum((doc_id in ours) == (doc_id in theirs) for doc_id in all_ids)
    only_ours, only_theirs = ours - theirs, theirs - ours
    result = {
        "agreement_with": name,
        "docs": len(all_ids),
        "agree": agree,
        "agreement": round(agree / len(all_ids), 4),
        "kept_ours": len(ours),
        "kept_datatrove": len(theirs),
        "kept_by_both": len(ours & theirs),
        "kept_only_by_us": len(only_ours),
        "kept_only_by_datatrove": len(only_theirs),
        # why we drop what datatrove keeps (for what datatrove drops, see its stats.json)
        "our_reasons_where_datatrove_keeps": dict(Counter(our_reasons.get(i, "?") for i in only_theirs).most_common(8)),
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    parser.add_argument("--datatrove-kept", type=Path, help="kept/ folder of a datatrove filter run on the same corpus")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-curate"))
    parser.add_argument("--result", type=Path, help="append the JSON results to this file")
    parser.add_argument("--runs", default="filters_w1,filters_w2,full_w1,full_w2,filters_w2_datatrove_alpha")
    args = parser.parse_args()
    if not (args.corpus / "pile").is_dir():
        sys.exit(f"no corpus at {args.corpus} (expected {args.corpus}/pile/*.jsonl.zst); pass --corpus")
    plans = {
        "filters_w1": (1, FILTERS_ONLY),
        "filters_w2": (2, FILTERS_ONLY),
        "full_w1": (1, []),
        "full_w2": (2, []),
        "filters_w2_datatrove_alpha": (2, FILTERS_ONLY + DATATROVE_ALPHA_RULE),
    }
    results = [run_curate(name, args.corpus, args.out, *plans[name]) for name in args.runs.split(",")]
    if args.datatrove_kept:
        all_ids, theirs = corpus_ids(args.corpus), datatrove_kept_ids(args.datatrove_kept)
        for name in args.runs.split(","):
            if name.startswith("filters"):
                results.append(agreement(name, args.out / name, all_ids, theirs))
    if args.result:
        with open(args.result, "a") as file:
            file.writelines(json.dumps(result) + "\n" for result in results)


if __name__ == "__main__":
    main()
