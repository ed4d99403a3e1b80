"""Benchmark: decontamination and the training-data fingerprint (a recorded run, not a test).

  PYTHONPATH=. .venv/bin/python benchmarks/bench_decontaminate.py [--items 100000] [--corpus ../shared/corpus]
      [--max-mb 40]

1. Index build for --items synthetic task items (25-60 words, multiple choice records): seconds,
   peak memory of the process above its start, bytes on disk.
2. Lookups (mode=remove, the Decontaminator of a filter unit, the index memory-mapped) over the
   corpus's documents: text MB per CPU-second; documents flagged (the items are random word
   sequences, so every flag is a false positive).
3. Fingerprint grams (what an encode unit adds per train document): MB per CPU-second, and
   distinct 13-grams per MB of text (the fingerprint's size: 8 bytes each).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import resource
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import zstandard

from data_pipeline.decontaminate.config import DecontaminateConfig
from data_pipeline.decontaminate.filter import Decontaminator
from data_pipeline.decontaminate.index import build_index
from data_pipeline.decontaminate.ngrams import sorted_unique, text_gram_hashes
from data_pipeline.document import Document


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_items(path: Path, count: int) -> None:
    rng = random.Random(0)
    vocabulary = [f"w{index}" for index in range(50_000)]
    with open(path, "w") as stream:
        for _ in range(count):
            words = rng.choices(vocabulary, k=rng.randint(20, 50))
            stream.write(
                json.dumps(
                    {
                        "context": " ".join(words),
                        "choices": [" ".join(rng.choices(vocabulary, k=5)) for _ in range(4)],
                        "label": 0,
                    }
                )
                + "\n"
            )


def corpus_texts(corpus: Path, max_mb: float) -> Iterator[str]:
    budget = max_mb * 1e6
    for path in sorted(corpus.glob("pile/*.jsonl.zst")) + sorted(corpus.glob("c4-sample/*.json.gz")):
        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb")) if path.suffix == ".zst" else gzip.open(path)
        for line in io.TextIOWrapper(raw, encoding="utf-8"):
            text = json.loads(line)["text"]
            budget -= len(text.encode())
            if budget < 0:
                return
            yield text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--corpus", type=Path, default=Path("../shared/corpus"))
    parser.add_argument("--max-mb", type=float, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        task = Path(scratch) / "task.jsonl"
        write_items(task, args.items)
        config = DecontaminateConfig(tasks=[str(task)])
        before, start = peak_rss_mb(), time.process_time()
        meta = build_index(config, Path(scratch) / "index")
        on_disk = sum(path.stat().st_size for path in (Path(scratch) / "index").iterdir())
        print(
            f"index: {args.items:,} items, {meta['grams']:,} grams in {time.process_time() - start:.1f} CPU-s, "
            f"peak memory +{peak_rss_mb() - before:.0f} MB, {on_disk / 1e6:.1f} MB on disk"
        )
        if not args.corpus.is_dir():
            print(f"no corpus at {args.corpus}: lookups not measured")
            return
        texts = list(corpus_texts(args.corpus, args.max_mb))
        megabytes = sum(len(text.encode()) for text in texts) / 1e6
        decontaminator = Decontaminator(config, Path(scratch) / "index")
        start = time.process_time()
        flagged = sum(
            decontaminator(Document(str(number), text, {}, "", 0)) is not None for number, text in enumerate(texts)
        )
        seconds = time.process_time() - start
        print(
            f"lookups: {len(texts):,} documents, {megabytes:.1f} MB: {megabytes / seconds:.1f} MB per CPU-second, "
            f"{flagged} flagged"
        )
        start = time.process_time()
        grams = sorted_unique(np.concatenate([text_gram_hashes(text) for text in texts]))
        seconds = time.process_time() - start
        print(
            f"fingerprint grams: {megabytes / seconds:.1f} MB per CPU-second (hash + unique); "
            f"{len(grams) / megabytes:,.0f} distinct 13-grams per MB of text "
            f"({8 * len(grams) / megabytes / 1e6:.2f} bytes per byte)"
        )


if __name__ == "__main__":
    main()
