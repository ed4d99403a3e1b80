"""Benchmark: the clusters unit's merge of forests, in memory (components.merged_forest) and on
disk (disk_components.DiskComponents), on the same generated forests: peak RSS and CPU time of
each in a fresh process (a recorded run, not a test).

Forests: N documents removed, in clusters of geometric size (mean ~3) whose documents are
spread over the corpus's code space, each cluster's links cut over --shards forests (as the
buckets partitions see them), so the merge has to join pieces; each link is in --copies
forests (near copies share band keys in many partitions: bench_scale.py at 4 M documents has
~10 forest rows per removed document).

  .venv/bin/python benchmarks/bench_components.py --removed 500000 2000000 --copies 8
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import shutil
import tempfile
from pathlib import Path

import numpy as np

from data_pipeline.dedup.components import merged_forest
from data_pipeline.dedup.disk_components import DiskComponents


def forests(removed: int, shards: int, copies: int, seed: int = 0) -> list[np.ndarray]:
    """(document, earlier document) links of random clusters, each in `copies` of `shards` pieces."""
    rng = np.random.default_rng(seed)
    sizes = rng.geometric(0.4, size=removed) + 1  # documents per cluster, >= 2
    sizes = sizes[np.cumsum(sizes - 1) <= removed]
    codes = np.unique(rng.integers(0, 2**62, size=int(sizes.sum() * 1.01) + 16, dtype=np.uint64))
    codes = rng.permutation(codes)[: sizes.sum()]
    cluster = np.repeat(np.arange(len(sizes)), sizes)
    first = np.concatenate(([True], cluster[1:] != cluster[:-1]))
    links = np.stack((codes[1:][~first[1:]], codes[:-1][~first[1:]]), axis=1)  # chains in random order
    links = np.concatenate([links] * copies)
    shard = rng.integers(0, shards, size=len(links))
    return [links[shard == s] for s in range(shards)]


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _run(way: str, pieces_path: str, rows: int, connection) -> None:
    pieces = np.load(pieces_path)
    names = sorted(pieces.files)
    base_rss = _peak_rss_mb()
    steps = 0
    if way == "memory":
        removed = len(merged_forest(pieces[name] for name in names))
    else:
        scratch = Path(tempfile.mkdtemp(prefix="components-"))
        total = sum(len(pieces[name]) for name in names)
        components = DiskComponents(scratch / "work", rows, edges=total)
        for name in names:
            components.add(pieces[name])
        components.solve()
        removed = sum(len(rows_) for rows_ in components.removals())
        steps = components.steps
        shutil.rmtree(scratch)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    connection.send(
        {
            "way": way,
            "removed": removed,
            "peak_rss_mb": round(_peak_rss_mb(), 1),
            "rss_before_mb": round(base_rss, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "steps": steps,
        }
    )


def measure(way: str, pieces_path: str, rows: int) -> dict:
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_run, args=(way, pieces_path, rows, sender))
    process.start()
    result = receiver.recv()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--removed", type=int, nargs="+", default=[500_000, 2_000_000])
    parser.add_argument("--rows", type=int, default=2_000_000, help="dedup.cluster_rows of the on-disk run")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--copies", type=int, default=8, help="forests each link is in")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for removed in args.removed:
            path = str(Path(folder) / f"forests-{removed}.npz")
            pieces = forests(removed, args.shards, args.copies)
            np.savez(path, **{f"{s:05d}": piece for s, piece in enumerate(pieces)})
            rows = sum(len(piece) for piece in pieces)
            del pieces
            for way in ("memory", "disk"):
                print(
                    json.dumps(
                        {"forest_rows": rows, "copies": args.copies, "rows": args.rows, **measure(way, path, args.rows)}
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
