"""Benchmark tokenizer training and the tokenize command against Hugging Face tokenizers.

    .venv/bin/python benchmarks/bench_tokenizer.py [--corpus /work/shared/corpus/pile]
        [--megabytes 100] [--vocab-size 32000] [--workdir /tmp/bench_tokenizer]

Takes whole shards of the corpus until ~--megabytes of text, then measures, each in its own
process (wall time, CPU time of the process and its workers, peak memory):
  1. `data_pipeline.train_tokenizer` at --vocab-size;
  2. the whole `data_pipeline.tokenize` command with 1 and 2 workers (read, decode, encode, write);
  3. an HF `tokenizers` ByteLevel BPE of the same vocabulary trained on the same documents,
     then its `encode_batch` over the same text, already in memory, with 1 and 2 threads.
CPU time is reported beside wall time because the machine may be shared.
Prints a Markdown table and writes results.json into --workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_pipeline.document import Document  # noqa: E402
from data_pipeline.io.config import ReaderConfig  # noqa: E402
from data_pipeline.io.readers import read_unit  # noqa: E402
from data_pipeline.tokenizer.sample import input_units  # noqa: E402

HF_BATCH = 1000  # documents per encode_batch call: keeps the Encoding objects' memory bounded


@dataclass
class Measurement:
    name: str
    wall_seconds: float
    cpu_seconds: float
    peak_rss_mb: float  # of the largest single process (wait4's ru_maxrss)
    stdout: str
    peak_tree_rss_mb: float = 0.0  # of the process and its children together, polled


def tree_rss_bytes(root: int) -> int:
    """Resident memory of ``root`` and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except OSError:  # the process ended meanwhile
                pass
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm") as statm:
                total += int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total


class TreeMemoryPoller(threading.Thread):
    """The peak of tree_rss_bytes(pid), polled every ``interval`` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.peak = max(self.peak, tree_rss_bytes(self.pid))


def measure(name: str, command: list[str], env: dict[str, str] | None = None) -> Measurement:
    """Run ``command``; wait4 gives the CPU time and peak memory of it and its workers, and
    polling /proc the peak of their memory together."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, text=True)
    poller = TreeMemoryPoller(process.pid)
    poller.start()
    stdout = process.stdout.read()
    poller.done.set()  # before wait4 reaps the process, so that its pid is not reused meanwhile
    poller.join()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    exit_code = os.waitstatus_to_exitcode(status)
    if exit_code:
        raise SystemExit(f"{name}: `{' '.join(command)}` exited with {exit_code}")
    print(f"{name}: {wall:.1f} s wall, {usage.ru_utime + usage.ru_stime:.1f} s CPU", file=sys.stderr)
    return Measurement(name, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, stdout, poller.peak / 2**20)


def documents(shard: str) -> Iterator[Document]:
    """The documents of a corpus, a folder of them or one shard (bad records skipped)."""
    for unit in input_units(shard):
        yield from (item for item in read_unit(unit, ReaderConfig()) if isinstance(item, Document))


def texts(input_dir: Path) -> Iterator[str]:
    return (document.text for document in documents(str(input_dir)))


def link_shards(corpus: Path, megabytes: float, input_dir: Path) -> int:
    """Link whole shards into ``input_dir`` until they hold ``megabytes`` of text; the text bytes."""
    input_dir.mkdir(parents=True, exist_ok=True)
    total = 0
    for path in sorted({Path(unit.source.path) for unit in input_units(str(corpus))}):
        if total >= megabytes * 1e6:
            break
        (input_dir / path.name).unlink(missing_ok=True)
        (input_dir / path.name).symlink_to(path)
        total += sum(len(document.text.encode()) for document in documents(str(path)))
    return total


def hf_train(input_dir: Path, output: Path, vocab_size: int) -> None:
    from tokenizers import ByteLevelBPETokenizer

    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(texts(input_dir), vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"])
    tokenizer.save(str(output))


def hf_encode(input_dir: Path, tokenizer_path: Path) -> None:
    """Encode time only: the text is read into memory first."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    documents = list(texts(input_dir))
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    tokens = 0
    for start in range(0, len(documents), HF_BATCH):
        tokens += sum(len(encoding.ids) for encoding in tokenizer.encode_batch(documents[start : start + HF_BATCH]))
    print(
        json.dumps(
            {
                "wall_seconds": time.perf_counter() - start_wall,
                "cpu_seconds": time.process_time() - start_cpu,
                "tokens": tokens,
            }
        )
    )


def summary_tokens(stdout: str) -> int:
    """The token count from the tokenize command's summary line."""
    return int(stdout.split(" documents, ")[1].split(" tokens")[0].replace(",", ""))


def run_benchmark(args: argparse.Namespace) -> None:
    workdir = args.workdir
    input_dir = workdir / "input"
    num_bytes = link_shards(args.corpus, args.megabytes, input_dir)
    megabytes = num_bytes / 1e6
    print(f"corpus: {len(list(input_dir.iterdir()))} shards, {megabytes:.1f} MB of text", file=sys.stderr)
    python = sys.executable
    tokenizer_dir = workdir / "tokenizer"
    train = measure(
        "train_tokenizer",
        [
            python,
            "-m",
            "data_pipeline.train_tokenizer",
            f"input={input_dir}",
            f"output_dir={tokenizer_dir}",
            f"vocab_size={args.vocab_size}",
        ],
    )
    rows = [("SentencePiece BPE training (all cores)", train, None)]
    for workers in (1, 2):
        output_dir = workdir / f"tokens-{workers}"
        subprocess.run(["rm", "-rf", str(output_dir)], check=True)
        run = measure(
            f"tokenize workers={workers}",
            [
                python,
                "-m",
                "data_pipeline.tokenize",
                f"input={input_dir}",
                f"tokenizer={tokenizer_dir}",
                f"output_dir={output_dir}",
                f"workers={workers}",
                "progress=false",
            ],
        )
        rows.append((f"`tokenize` command, workers={workers}", run, summary_tokens(run.stdout)))
    hf_path = workdir / "hf-bytelevel-bpe.json"
    hf_training = measure(
        "hf train", [python, __file__, "hf-train", str(input_dir), str(hf_path), str(args.vocab_size)]
    )
    rows.append(("HF ByteLevel BPE training (all cores)", hf_training, None))
    for threads in (1, 2):
        run = measure(
            f"hf encode threads={threads}",
            [python, __file__, "hf-encode", str(input_dir), str(hf_path)],
            env={"RAYON_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "true"},
        )
        encoded = json.loads(run.stdout)
        timed = Measurement(run.name, encoded["wall_seconds"], encoded["cpu_seconds"], run.peak_rss_mb, "")
        rows.append((f"HF `encode_batch` (text in memory), threads={threads}", timed, encoded["tokens"]))
    report(rows, megabytes, workdir)


def report(rows: list[tuple[str, Measurement, int | None]], megabytes: float, workdir: Path) -> None:
    print(
        f"| what ({megabytes:.0f} MB of text) | wall s | CPU s | peak RSS MB | MB/s | tokens/s | MB per CPU-s "
        "| tokens per CPU-s | bytes/token |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    results = []
    for label, run, tokens in rows:
        if tokens:
            speed = (
                f"{megabytes / run.wall_seconds:.2f} | {tokens / run.wall_seconds / 1e6:.2f} M | "
                f"{megabytes / run.cpu_seconds:.2f} | {tokens / run.cpu_seconds / 1e6:.2f} M | "
                f"{megabytes * 1e6 / tokens:.2f}"
            )
        else:
            speed = " | | | | "
        print(f"| {label} | {run.wall_seconds:.1f} | {run.cpu_seconds:.1f} | {run.peak_rss_mb:.0f} | {speed} |")
        results.append({**asdict(run), "label": label, "tokens": tokens, "megabytes": megabytes})
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "hf-train":
        hf_train(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "hf-encode":
        hf_encode(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("/work/shared/corpus/pile"))
    parser.add_argument("--megabytes", type=float, default=100)
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_tokenizer"))
    run_benchmark(parser.parse_args())


if __name__ == "__main__":
    main()
