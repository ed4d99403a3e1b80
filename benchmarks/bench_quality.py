"""Benchmark of the learned quality filter on the shared corpus (not a test; minutes of CPU).

    .venv/bin/python benchmarks/bench_quality.py --corpus ../shared/corpus --out /tmp/bench-quality \\
        --result /tmp/bench-quality.jsonl [--reuse-model]

1. Splits corpus/pile by shard: even shards train, odd shards are the held-out corpus the model
   never sees. The training shards are written out as positives (manifest category prose_en)
   and negatives (every other category: other-language prose, code, word lists, catalogs).
2. Trains with ``python -m data_pipeline.train_quality`` (CPU seconds; the held-out precision
   and recall it prints).
3. Curates the held-out shards (dedup off) with: no filter but normalize and PII (the baseline
   cost of reading and writing), the heuristics (the defaults), the quality filter alone
   (threshold 0.5), the heuristics then the quality filter, and the quality filter alone with
   keep_fraction. Reports, per run, the share of each manifest category kept, and CPU seconds;
   a filter's MB per CPU-second is the input MB over its run's CPU minus the baseline's.
4. Times the model's scoring (tokens, hashes, the mean of the rows) and the PII formatter
   (default, and with phone numbers), each alone in this process over the held-out text: MB per
   CPU-second.
Never run it beside another benchmark on a 2-core machine.
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

import zstandard

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_pipeline.document import Document  # noqa: E402
from data_pipeline.filters.pii import PiiConfig, PiiFormatter  # noqa: E402
from data_pipeline.filters.quality_model import load_model  # noqa: E402
from data_pipeline.io.lines import iter_lines  # noqa: E402
from data_pipeline.io.writers import iter_shard  # noqa: E402

POSITIVE = "prose_en"
HEURISTICS_OFF = [f"filters.{name}.enabled=false" for name in ("gopher_repetition", "gopher_quality", "c4", "language")]
NO_DEDUP = ["dedup.exact=false", "dedup.near=false"]


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def categories(corpus: Path) -> dict[str, str]:
    with gzip.open(corpus / "manifest.jsonl.gz", "rt", encoding="utf-8") as file:
        return {record["id"]: record["category"] for record in map(json.loads, file)}


def split_training_set(corpus: Path, shards: list[Path], category: dict[str, str], out: Path) -> dict[str, int]:
    """Training shards -> out/{positives,negatives}/<shard>.jsonl.zst, by manifest category."""
    counts: Counter[str] = Counter()
    for folder in ("positives", "negatives"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for shard in shards:
        lines: dict[str, list[bytes]] = {"positives": [], "negatives": []}
        for line in iter_lines(str(shard)):
            side = "positives" if category[json.loads(line)["meta"]["id"]] == POSITIVE else "negatives"
            lines[side].append(line)
        for side, chosen in lines.items():
            (out / side / shard.name).write_bytes(zstandard.ZstdCompressor().compress(b"\n".join(chosen) + b"\n"))
            counts[side] += len(chosen)
    return dict(counts)


def run(command: list[str]) -> tuple[float, float, str]:
    """(wall s, CPU s of the process tree, stdout)."""
    cpu_before, start = children_cpu_seconds(), time.perf_counter()
    done = subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, children_cpu_seconds() - cpu_before, done.stdout


def curate(name: str, inputs: list[Path], out: Path, overrides: list[str], category: dict[str, str]) -> dict:
    output_dir = out / name
    shutil.rmtree(output_dir, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "data_pipeline.curate",
        "input=[" + ",".join(map(str, inputs)) + "]",
        f"output_dir={output_dir}",
        "progress=false",
        *NO_DEDUP,
        *overrides,
    ]
    wall, cpu, _ = run(command)
    report = json.loads((output_dir / "report.json").read_text())
    kept = Counter(
        category[record["id"]] for path in output_dir.glob("part-*.jsonl.zst") for record in iter_shard(path)
    )
    total = Counter(category[record_id] for record_id in held_out_ids(inputs))
    result = {
        "run": name,
        "overrides": overrides,
        "input_mb": round(report["input"]["bytes"] / 1e6, 1),
        "docs_in": report["input"]["documents"],
        "docs_out": report["output"]["documents"],
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "kept_share": {name: round(kept[name] / total[name], 3) for name in sorted(total)},
        "kept": dict(kept),
        "of": dict(total),
        "removed": {stage["stage"]: stage["removed"] for stage in report["stages"]},
    }
    print(json.dumps(result), flush=True)
    return result


def held_out_ids(inputs: list[Path]) -> list[str]:
    return [json.loads(line)["meta"]["id"] for path in inputs for line in iter_lines(str(path))]


def in_process_speed(model_path: Path, inputs: list[Path]) -> list[dict]:
    """MB per CPU-second of the model's scoring and of the PII formatter, each alone."""
    model = load_model(str(model_path))
    texts = [json.loads(line)["text"] for path in inputs for line in iter_lines(str(path))]
    megabytes = sum(len(text.encode("utf-8")) for text in texts) / 1e6
    results = []
    for name, step in (
        ("scoring", lambda text: model.score_text(text)),
        ("pii", PiiFormatter(PiiConfig())),
        ("pii_with_phone", PiiFormatter(PiiConfig(phone=True))),
    ):
        documents = [Document("x", text, {}, "bench", 1) for text in texts] if name.startswith("pii") else texts
        start = time.process_time()
        for document in documents:
            step(document)
        cpu = time.process_time() - start
        results.append(
            {
                "run": f"{name}_in_process",
                "input_mb": round(megabytes, 1),
                "cpu_s": round(cpu, 2),
                "mb_per_cpu_s": round(megabytes / cpu, 2),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-quality"))
    parser.add_argument("--result", type=Path, help="append the JSON results to this file")
    parser.add_argument(
        "--keep-fraction", type=float, default=0.6, help="for the keep_fraction run (the corpus is ~60%% English prose)"
    )
    parser.add_argument("--train-options", nargs="*", default=[], help="extra train_quality overrides, e.g. epochs=3")
    parser.add_argument(
        "--reuse-model",
        action="store_true",
        help="keep OUT/quality.npz from an earlier run (training is deterministic)",
    )
    parser.add_argument("--in-process-only", action="store_true", help="skip the curation runs (step 3)")
    args = parser.parse_args()
    shards = sorted((args.corpus / "pile").glob("shard-*.jsonl.zst"))
    if not shards:
        sys.exit(f"no corpus at {args.corpus} (expected {args.corpus}/pile/shard-*.jsonl.zst); pass --corpus")
    training, held_out = shards[0::2], shards[1::2]
    category = categories(args.corpus)
    results = [
        {
            "run": "split",
            "training_shards": len(training),
            "held_out_shards": len(held_out),
            **split_training_set(args.corpus, training, category, args.out / "train"),
        }
    ]
    print(json.dumps(results[0]), flush=True)

    model = args.out / "quality.npz"
    if not (args.reuse_model and model.exists()):
        wall, cpu, _ = run(
            [
                sys.executable,
                "-m",
                "data_pipeline.train_quality",
                f"positives={args.out / 'train' / 'positives'}",
                f"negatives={args.out / 'train' / 'negatives'}",
                f"output={model}",
                *args.train_options,
            ]
        )
        results.append(
            {"run": "train", "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "options": args.train_options}
        )
    header = load_model(str(model)).header
    results.append(
        {
            "run": "model",
            "sha256": header["sha256"],
            **{key: header["training"].get(key) for key in ("heldout", "training")},
        }
    )
    print(json.dumps(results[-1]), flush=True)

    quality = [f"filters.quality.model={model}"]
    plans = [
        ("baseline", HEURISTICS_OFF),
        ("heuristics", []),
        ("quality_only", HEURISTICS_OFF + quality + ["filters.quality.threshold=0.5"]),
        ("heuristics_then_quality", quality + ["filters.quality.threshold=0.5"]),
        (
            "quality_only_keep_fraction",
            HEURISTICS_OFF + quality + [f"filters.quality.keep_fraction={args.keep_fraction}"],
        ),
    ]
    if not args.in_process_only:
        runs = {name: curate(name, held_out, args.out, overrides, category) for name, overrides in plans}
        results += runs.values()
        baseline = runs["baseline"]["cpu_s"]
        for name in ("heuristics", "quality_only"):
            extra = runs[name]["cpu_s"] - baseline
            results.append(
                {
                    "run": f"{name}_filter_cost",
                    "cpu_s_over_baseline": round(extra, 1),
                    "mb_per_cpu_s": round(runs[name]["input_mb"] / extra, 2) if extra > 0 else None,
                }
            )
            print(json.dumps(results[-1]), flush=True)
    results += in_process_speed(model, held_out)
    if args.result:
        with open(args.result, "a") as file:
            file.writelines(json.dumps(result) + "\n" for result in results)


if __name__ == "__main__":
    main()
