"""Benchmark tokenizer training alone: time and peak memory against the size of the sample.

    .venv/bin/python benchmarks/bench_tokenizer_training.py [--corpus /work/shared/corpus/pile]
        [--megabytes 50 100] [--vocab-size 32000] [--workdir /tmp/bench_tokenizer_training]

For each size, builds an input of ~that many MB of text from the corpus's shards (whole
documents in corpus order; past the corpus's end it starts again with ids made distinct,
so the text repeats: say so when reporting) and runs `data_pipeline.train_tokenizer` on all
of it (`input_sentence_size` large enough, `sample_units_factor=null`) in its own process.
Reports wall time, CPU time of the process and its workers (wait4), peak memory of the
largest process (ru_maxrss) and of the process tree together (polled from /proc).
Prints a Markdown table and writes results.json into --workdir.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import zstandard
from bench_tokenizer import REPO, measure

sys.path.insert(0, str(REPO))

from data_pipeline.io.lines import iter_lines  # noqa: E402
from data_pipeline.tokenizer.sample import input_units  # noqa: E402

# More texts than any input here holds: the sample is the whole input.
WHOLE_INPUT_TEXTS = 10_000_000


def write_input(corpus: Path, megabytes: float, output: Path) -> tuple[int, int]:
    """One ``.jsonl.zst`` shard of ~``megabytes`` of text from the corpus's records (their
    ids suffixed with the pass over the corpus); returns (documents, text bytes)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    shards = [unit.source.path for unit in input_units(str(corpus))]
    documents = text_bytes = 0
    with open(output, "wb") as raw, zstandard.ZstdCompressor(level=3).stream_writer(raw) as stream:
        for repeat in range(1_000_000):
            for shard in shards:
                for line in iter_lines(shard):
                    if text_bytes >= megabytes * 1e6:
                        return documents, text_bytes
                    record = json.loads(line)
                    record["id"] = f"{record.get('id', documents)}-{repeat}"
                    stream.write((json.dumps(record) + "\n").encode())
                    documents += 1
                    text_bytes += len(record["text"].encode())
    raise AssertionError("unreachable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("/work/shared/corpus/pile"))
    parser.add_argument("--megabytes", type=float, nargs="+", default=[50, 100])
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_tokenizer_training"))
    args = parser.parse_args()
    print("| text MB | documents | wall s | CPU s | peak RSS MB (largest process) | peak RSS MB (tree) |")
    print("|---|---|---|---|---|---|")
    results = []
    for megabytes in args.megabytes:
        input_dir = args.workdir / f"input-{megabytes:g}"
        documents, text_bytes = write_input(args.corpus, megabytes, input_dir / "input.jsonl.zst")
        run = measure(
            f"train {megabytes:g} MB",
            [
                sys.executable,
                "-m",
                "data_pipeline.train_tokenizer",
                f"input={input_dir}",
                f"output_dir={args.workdir / f'tokenizer-{megabytes:g}'}",
                f"vocab_size={args.vocab_size}",
                f"input_sentence_size={WHOLE_INPUT_TEXTS}",
                "sample_units_factor=null",
                "hf_export=false",
            ],
        )
        print(
            f"| {text_bytes / 1e6:.0f} | {documents} | {run.wall_seconds:.1f} | {run.cpu_seconds:.1f} | "
            f"{run.peak_rss_mb:.0f} | {run.peak_tree_rss_mb:.0f} |",
            flush=True,
        )
        results.append({**asdict(run), "text_bytes": text_bytes, "documents": documents})
        (args.workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
