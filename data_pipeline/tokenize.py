"""Tokenize curated JSONL shards into packed token shards, in parallel and resumably.

    python -m data_pipeline.tokenize input=<dir|glob> tokenizer=<path> output_dir=<dir>

Input shard ``i`` becomes ``<output_dir>/train-<i>`` and ``val-<i>`` (see tokenize_shard);
shards finished by an earlier run are skipped. ``<output_dir>/tokenizer_meta.json`` records
the tokenizer, so training can check it uses the same one (data_pipeline.token_directory).
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from omegaconf import MISSING
from tqdm import tqdm

from data_pipeline.documents import BadRecordLog, find_input_shards
from data_pipeline.executors.pool import run_unordered
from data_pipeline.tokenize_shard import SPLITS, ShardJob, ShardResult, is_done, tokenize_shard
from data_pipeline.tokenizer_files import TokenizerFiles
from data_pipeline.tokenizer_hydra import hydra_entry_point
from data_pipeline.formats.token_shards import shard_prefix

log = logging.getLogger(__name__)
PLAN_FILENAME = "tokenize_plan.json"


@dataclass
class TokenizeConfig:
    input: str = MISSING
    # A tokenizer directory (train_tokenizer's output_dir) or its tokenizer.model.
    tokenizer: str = MISSING
    output_dir: str = MISSING
    # Worker processes, one input shard at a time each; 0 = all cores.
    workers: int = 0
    # Share of documents (by id hash) that go to the val split.
    val_fraction: float = 0.005
    # Every document ends with EOS; also start each with BOS.
    add_bos: bool = False
    strict: bool = False
    progress: bool = True


@dataclass(frozen=True)
class TokenizePlan:
    """What decides the content of the shards; a resumed run must agree with it."""

    tokenizer_hash: str
    val_fraction: float
    add_bos: bool
    sources: list[str]

    def check_resumable(self, output_dir: Path) -> None:
        path = output_dir / PLAN_FILENAME
        if path.exists():
            earlier = json.loads(path.read_text())
            changed = [key for key, value in asdict(self).items() if earlier.get(key) != value]
            if changed:
                raise ValueError(
                    f"{path}: output_dir holds shards made with other {', '.join(changed)} "
                    f"(was {', '.join(repr(earlier.get(key))[:80] for key in changed)}); use a new output_dir, "
                    "or delete the old shards and this file"
                )
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


@dataclass
class TokenizeSummary:
    shards_done: int = 0
    shards_skipped: int = 0
    failed: list[str] = field(default_factory=list)
    documents: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    num_bytes: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    bad_records: BadRecordLog = field(default_factory=BadRecordLog)

    def add(self, result: ShardResult) -> None:
        self.cpu_seconds += result.cpu_seconds
        self.bad_records.merge(result.bad_records)
        if result.error:
            self.failed.append(result.error)
            return
        self.shards_done += 1
        self.num_bytes += result.num_bytes
        for split in SPLITS:
            self.documents[split] += result.documents[split]
            self.tokens[split] += result.tokens[split]

    def __str__(self) -> str:
        documents, tokens = sum(self.documents.values()), sum(self.tokens.values())
        megabytes = self.num_bytes / 1e6
        wall, cpu = max(self.wall_seconds, 1e-9), max(self.cpu_seconds, 1e-9)
        splits = ", ".join(f"{split} {self.documents[split]:,} docs / {self.tokens[split]:,} tokens" for split in SPLITS)
        return (
            f"tokenized {self.shards_done} shards ({self.shards_skipped} already done, {len(self.failed)} failed): "
            f"{documents:,} documents, {tokens:,} tokens, {megabytes:.1f} MB in {self.wall_seconds:.1f} s\n"
            f"  {megabytes / wall:.2f} MB/s, {tokens / wall:,.0f} tokens/s; per CPU-second of the workers: "
            f"{megabytes / cpu:.2f} MB, {tokens / cpu:,.0f} tokens; "
            f"{self.num_bytes / max(tokens, 1):.2f} bytes/token\n"
            f"  {splits}; {self.bad_records.count} bad records skipped"
        )


def run_jobs(jobs: list[ShardJob], workers: int) -> Iterator[ShardResult]:
    """Results in completion order; one worker runs in this process. A worker that dies
    (OOM killer) fails the run at once, naming its shard."""
    for _, result in run_unordered(tokenize_shard, jobs, workers, describe=lambda job: f"shard {job.source}"):
        yield result


def with_progress(results: Iterable[ShardResult], jobs: list[ShardJob], enabled: bool) -> Iterator[ShardResult]:
    total = sum(job.source.stat().st_size for job in jobs)
    with tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing", disable=not enabled) as bar:
        for result in results:
            bar.update(result.source.stat().st_size)
            yield result


def remove_partial_files(jobs: list[ShardJob]) -> None:
    """Drop what workers stopped mid-shard left behind (an unfinished shard is never read)."""
    for job in jobs:
        for split in SPLITS:
            prefix = shard_prefix(job.output_dir, split, job.index)
            for partial in prefix.parent.glob(f"{prefix.name}.*.tmp"):
                partial.unlink(missing_ok=True)


def tokenize_corpus(config: TokenizeConfig) -> TokenizeSummary:
    if not 0 <= config.val_fraction < 1:
        raise ValueError(f"val_fraction={config.val_fraction}: must be at least 0 and below 1")
    if config.workers < 0:
        raise ValueError(f"workers={config.workers}: set a number of processes, or 0 for all cores")
    tokenizer = TokenizerFiles.load(config.tokenizer)
    sources = find_input_shards(config.input)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    plan = TokenizePlan(tokenizer.special_tokens.tokenizer_hash, config.val_fraction, config.add_bos,
                        [str(path.resolve()) for path in sources])
    plan.check_resumable(output_dir)
    tokenizer.special_tokens.save(output_dir)

    summary = TokenizeSummary()
    jobs = []
    for index, source in enumerate(sources):
        if is_done(output_dir, index):
            summary.shards_skipped += 1
        else:
            jobs.append(ShardJob(index, source, output_dir, tokenizer, config.val_fraction, config.add_bos, config.strict))
    workers = max(1, min(config.workers or os.cpu_count() or 1, len(jobs)))
    log.info("tokenizing %d shards (%d already done) with %d workers into %s",
             len(jobs), summary.shards_skipped, workers, output_dir)
    start = time.perf_counter()
    try:
        for result in with_progress(run_jobs(jobs, workers), jobs, config.progress):
            summary.add(result)
    except BaseException:
        remove_partial_files(jobs)
        raise
    summary.wall_seconds = time.perf_counter() - start
    summary.bad_records.report()
    return summary


def tokenize_command(config: TokenizeConfig) -> None:
    summary = tokenize_corpus(config)
    print(summary)
    if summary.failed:
        raise RuntimeError(
            f"{len(summary.failed)} shards failed and were not written:\n  " + "\n  ".join(summary.failed)
            + "\nthe other shards are done; fix or remove these inputs and re-run the same command to finish"
        )


main = hydra_entry_point("tokenize", TokenizeConfig, tokenize_command)

if __name__ == "__main__":
    main()
