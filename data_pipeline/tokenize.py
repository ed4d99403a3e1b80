"""Tokenize curated JSONL shards into packed token shards, in parallel and resumably.

    python -m data_pipeline.tokenize input=<dir|glob> tokenizer=<path> output_dir=<dir>

Input shard ``i`` becomes ``<output_dir>/train-<i>`` and ``val-<i>`` (see tokenize_shard);
shards finished by an earlier run are skipped. ``<output_dir>`` also gets a copy of the
tokenizer (``tokenizer.model``, ``tokenizer_meta.json``, the Hugging Face files), so that
training with ``data.path=<output_dir>`` alone checks the shards against it and keeps it
for evaluation, generation and export.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from omegaconf import MISSING
from tqdm import tqdm

from data_pipeline.documents import BadRecordLog, find_input_shards
from data_pipeline.executors.pool import run_unordered
from data_pipeline.tokenize_shard import SPLITS, ShardJob, ShardResult, is_done, tokenize_shard
from data_pipeline.tokenizer.hf_added_tokens import write_grown_tokenizer
from data_pipeline.tokenizer.hf_tokenizer import HFTokenizerFiles, load_tokenizer_files
from data_pipeline.formats.tokenizer_files import TokenizerFiles, copy_tokenizer_files
from data_pipeline.tokenizer.hydra_entry import hydra_entry_point
from data_pipeline.formats.token_shards import ShardManifest, shard_prefix

log = logging.getLogger(__name__)
PLAN_FILENAME = "tokenize_plan.json"


@dataclass
class TokenizeConfig:
    input: str = MISSING
    # A tokenizer directory (train_tokenizer's output_dir) or its tokenizer.model, or a
    # Hugging Face tokenizer directory (tokenizer.json; docs/hf.md).
    tokenizer: str = MISSING
    output_dir: str = MISSING
    # Worker processes, one input shard at a time each; 0 = all cores.
    workers: int = 0
    # Share of documents (by id hash) that go to the val split.
    val_fraction: float = 0.005
    # Every document ends with EOS; also start each with BOS.
    add_bos: bool = False
    # A Hugging Face tokenizer only: append a mask token and num_sentinels sentinels to its
    # vocabulary (for objective=mlm / span; docs/hf.md). The shards get the grown tokenizer.
    add_special_tokens: bool = False
    num_sentinels: int = 100
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
    tokens_done_before: int = 0  # in shards an earlier run finished (not in the rates)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    bad_records: BadRecordLog = field(default_factory=BadRecordLog)

    def add_done(self, output_dir: Path, index: int) -> None:
        """A shard an earlier run finished: its counts, from its manifests."""
        self.shards_skipped += 1
        for split in SPLITS:
            manifest = ShardManifest.load(shard_prefix(output_dir, split, index).with_suffix(".json"))
            self.documents[split] += manifest.num_documents
            self.tokens[split] += manifest.num_tokens
            self.tokens_done_before += manifest.num_tokens

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
        new_tokens = tokens - self.tokens_done_before
        megabytes = self.num_bytes / 1e6
        wall, cpu = max(self.wall_seconds, 1e-9), max(self.cpu_seconds, 1e-9)
        splits = ", ".join(f"{split} {self.documents[split]:,} docs / {self.tokens[split]:,} tokens" for split in SPLITS)
        return (
            f"tokenized {self.shards_done} shards ({self.shards_skipped} already done, {len(self.failed)} failed): "
            f"{documents:,} documents, {tokens:,} tokens, {megabytes:.1f} MB in {self.wall_seconds:.1f} s\n"
            f"  {megabytes / wall:.2f} MB/s, {new_tokens / wall:,.0f} tokens/s; per CPU-second of the workers: "
            f"{megabytes / cpu:.2f} MB, {new_tokens / cpu:,.0f} tokens; "
            f"{self.num_bytes / max(new_tokens, 1):.2f} bytes/token\n"
            f"  {splits}; {self.bad_records.count} bad records skipped"
            + ("" if self.documents["val"] else "\n  warning: the val split is empty (raise val_fraction): "
               "training will report no validation loss")
        )


def run_jobs(jobs: list[ShardJob], workers: int) -> Iterator[ShardResult]:
    """Results in completion order; one worker runs in this process. A worker that dies
    (OOM killer) fails the run at once, naming its shard."""
    for _, result in run_unordered(tokenize_shard, jobs, workers, describe=lambda job: f"shard {job.source}"):
        yield result


def with_progress(results: Iterable[ShardResult], jobs: list[ShardJob], enabled: bool) -> Iterator[ShardResult]:
    total = sum(job.source.stat().st_size for job in jobs)
    # Only on a terminal: redrawn into a file (Slurm logs) a bar only bloats it.
    with tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing", disable=not enabled or not sys.stderr.isatty()) as bar:
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


def shard_tokenizer(config: TokenizeConfig, scratch: Path) -> TokenizerFiles | HFTokenizerFiles:
    """The tokenizer asked for, or with add_special_tokens its grown copy (written to ``scratch``)."""
    tokenizer = load_tokenizer_files(config.tokenizer)
    if not config.add_special_tokens:
        return tokenizer
    if not isinstance(tokenizer, HFTokenizerFiles):
        raise ValueError(
            f"add_special_tokens=true: tokenizer={config.tokenizer} is one of ours, which has a mask token and "
            "sentinels already; set add_special_tokens=false (it is for Hugging Face tokenizers)"
        )
    write_grown_tokenizer(tokenizer.model_path.parent, scratch, config.num_sentinels)
    return load_tokenizer_files(scratch)


def tokenize_corpus(config: TokenizeConfig) -> TokenizeSummary:
    if not 0 <= config.val_fraction < 1:
        raise ValueError(f"val_fraction={config.val_fraction}: must be at least 0 and below 1")
    if config.workers < 0:
        raise ValueError(f"workers={config.workers}: set a number of processes, or 0 for all cores")
    sources = find_input_shards(config.input)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # A grown tokenizer is made aside, so that output_dir keeps its own until the plan agrees.
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = shard_tokenizer(config, Path(scratch))
        plan = TokenizePlan(tokenizer.special_tokens.tokenizer_hash, config.val_fraction, config.add_bos,
                            [str(path.resolve()) for path in sources])
        plan.check_resumable(output_dir)
        # The tokenizer travels with the shards: training with data.path alone finds it.
        copy_tokenizer_files(tokenizer.model_path.parent, output_dir)
    tokenizer = load_tokenizer_files(output_dir)
    tokenizer.special_tokens.save(output_dir)

    summary = TokenizeSummary()
    jobs = []
    for index, source in enumerate(sources):
        if is_done(output_dir, index):
            summary.add_done(output_dir, index)
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
