"""Benchmark: exact + MinHash-LSH dedup of the planted-duplicate corpus (a recorded run, not a test).

Workers hash whole shards (read, decompress, parse, exact hash, MinHash band keys); the parent
clusters all shards together and scores the clusters with the anchors' bench_common. Throughput is
text MB per CPU-second of all processes (the machine is shared, so wall time alone misleads).

  .venv/bin/python benchmarks/bench_dedup.py --corpus ../shared/corpus --workers 1 2

--pipeline measures the sharded stages of the curation command instead (filters off): keys
to disk per input unit, buckets per key partition, components over the pairs, write, report,
each unit in a worker process; clusters are read back from the duplicate map.
"""

import argparse
import glob
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import zstandard

from data_pipeline.dedup import MinHashConfig, MinHasher, exact_hash, find_duplicates
from data_pipeline.io.writers import iter_shard


@dataclass
class ShardHashes:
    ids: list[str]
    text_bytes: int
    exact_hashes: list[bytes]
    signatures: np.ndarray


def read_pile_shard(path: str) -> list[dict]:
    with open(path, "rb") as compressed:
        lines = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(compressed), encoding="utf-8")
        return [json.loads(line) for line in lines]


def hash_shard(path: str, params: MinHashConfig) -> ShardHashes:
    docs = read_pile_shard(path)
    texts = [doc["text"] for doc in docs]
    return ShardHashes(
        ids=[doc["meta"]["id"] for doc in docs],
        text_bytes=sum(len(text.encode("utf-8", "surrogatepass")) for text in texts),
        exact_hashes=[exact_hash(text) for text in texts],
        signatures=MinHasher(params).signatures(texts),
    )


def cpu_seconds() -> float:
    """CPU time of this process and of its finished, waited-for children (the pool's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def hash_all(paths: list[str], params: MinHashConfig, workers: int) -> list[ShardHashes]:
    if workers == 1:
        return [hash_shard(path, params) for path in paths]
    MinHasher(params).signatures([""])  # builds the lookup tables once; forked workers inherit them
    pool = Pool(workers)
    try:
        return pool.starmap(hash_shard, [(path, params) for path in paths], chunksize=1)
    finally:
        pool.close()
        pool.join()  # reaped workers are what RUSAGE_CHILDREN counts


def run(
    paths: list[str], params: MinHashConfig, workers: int, min_jaccard: float, monitor_type: type
) -> tuple[dict, list[list[str]]]:
    with monitor_type() as monitor:  # bench_common.PeakRSS: peak memory and the other processes' load
        wall_start, cpu_start = time.perf_counter(), cpu_seconds()
        shards = hash_all(paths, params, workers)
        hashed_wall = time.perf_counter() - wall_start
        ids = [doc_id for shard in shards for doc_id in shard.ids]
        signatures = np.concatenate([shard.signatures for shard in shards])
        duplicate_of = find_duplicates(
            MinHasher(params).bands_of(signatures),
            [digest for shard in shards for digest in shard.exact_hashes],
            signatures=signatures,
            min_jaccard=min_jaccard,
        )
        wall, cpu = time.perf_counter() - wall_start, cpu_seconds() - cpu_start
    text_mb = sum(shard.text_bytes for shard in shards) / 1e6
    clusters: dict[int, list[str]] = {}
    for row in np.flatnonzero(duplicate_of >= 0).tolist():
        survivor = int(duplicate_of[row])
        clusters.setdefault(survivor, [ids[survivor]]).append(ids[row])
    timing = {
        "workers": workers,
        "docs": len(ids),
        "text_mb": round(text_mb, 1),
        "wall_s": round(wall, 2),
        "hash_wall_s": round(hashed_wall, 2),
        "cluster_wall_s": round(wall - hashed_wall, 2),
        "cpu_s": round(cpu, 2),
        "mb_per_cpu_s": round(text_mb / cpu, 2),
        "mb_per_wall_s": round(text_mb / wall, 2),
        "removed": int((duplicate_of >= 0).sum()),
        "peak_rss_mb": monitor.peak_mb,
        "other_cores_avg": round(monitor.other_cores, 2),
    }
    return timing, list(clusters.values())


FILTERS_OFF = [
    f"filters.{name}.enabled=false" for name in ("normalize", "gopher_repetition", "gopher_quality", "c4", "language")
]


def run_pipeline(corpus: str, workers: int, out: str, monitor_type: type) -> tuple[dict, list[list[str]]]:
    """The curation command's dedup stages on the corpus's pile shards, as a user runs them."""
    output_dir = os.path.join(out, f"pipeline-w{workers}")
    shutil.rmtree(output_dir, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "data_pipeline.curate",
        f"input={os.path.join(corpus, 'pile')}",
        f"output_dir={output_dir}",
        f"workers={workers}",
        "progress=false",
        "output.write_removed=false",
        *FILTERS_OFF,
    ]
    with monitor_type() as monitor:
        wall_start, cpu_start = time.perf_counter(), cpu_seconds()
        subprocess.run(command, check=True, capture_output=True)
        wall, cpu = time.perf_counter() - wall_start, cpu_seconds() - cpu_start
    report = json.loads(open(os.path.join(output_dir, "report.json")).read())
    clusters: dict[str, list[str]] = {}
    for path in sorted(glob.glob(os.path.join(output_dir, "removed", "duplicate_map-*.jsonl.zst"))):
        for record in iter_shard(Path(path)):
            clusters.setdefault(record["duplicate_of"], [record["duplicate_of"]]).append(record["id"])
    text_mb = report["input"]["bytes"] / 1e6
    timing = {
        "workers": workers,
        "docs": report["input"]["documents"],
        "text_mb": round(text_mb, 1),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "mb_per_cpu_s": round(text_mb / cpu, 2),
        "mb_per_wall_s": round(text_mb / wall, 2),
        "removed": sum(len(members) - 1 for members in clusters.values()),
        "peak_rss_mb": monitor.peak_mb,
        "other_cores_avg": round(monitor.other_cores, 2),
    }
    return timing, list(clusters.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="../shared/corpus")
    parser.add_argument("--anchors", default="", help="directory of bench_common.py (default: CORPUS/../anchors)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--min-jaccard",
        type=float,
        default=MinHashConfig.min_jaccard,
        help="verify band candidates on full signatures (0: off)",
    )
    parser.add_argument("--ngram-size", type=int, default=MinHashConfig.ngram_size)
    parser.add_argument("--bands", type=int, default=MinHashConfig.num_bands)
    parser.add_argument("--rows", type=int, default=MinHashConfig.rows_per_band)
    parser.add_argument("--seed", type=int, default=MinHashConfig.seed)
    parser.add_argument("--collapse-digit-runs", action="store_true", help="datatrove's digit normalization")
    parser.add_argument("--out", default="bench-out/dedup", help="predicted clusters are written here")
    parser.add_argument(
        "--pipeline", action="store_true", help="run the curation command's sharded dedup stages (filters off)"
    )
    args = parser.parse_args()

    sys.path.insert(0, args.anchors or os.path.join(os.path.dirname(os.path.abspath(args.corpus)), "anchors"))
    from bench_common import PeakRSS, evaluate_clusters

    params = MinHashConfig(
        ngram_size=args.ngram_size,
        num_bands=args.bands,
        rows_per_band=args.rows,
        seed=args.seed,
        collapse_digit_runs=args.collapse_digit_runs,
    )
    paths = sorted(glob.glob(os.path.join(args.corpus, "pile", "*.jsonl.zst")))
    os.makedirs(args.out, exist_ok=True)
    for workers in args.workers:
        if args.pipeline:
            timing, clusters = run_pipeline(args.corpus, workers, args.out, PeakRSS)
        else:
            timing, clusters = run(paths, params, workers, args.min_jaccard, PeakRSS)
        pred_path = os.path.join(args.out, f"clusters-w{workers}.jsonl")
        with open(pred_path, "w") as out:
            out.writelines(json.dumps(cluster) + "\n" for cluster in clusters)
        scores = evaluate_clusters(clusters, args.corpus)
        result = {"params": vars(params), "min_jaccard": args.min_jaccard, **timing, "pred": pred_path, "eval": scores}
        print(json.dumps(result, indent=1), flush=True)


if __name__ == "__main__":
    main()
