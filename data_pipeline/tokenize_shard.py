"""Tokenize one input shard into one packed token shard per split (runs in a worker process).

Input shard number ``i`` (its place in the sorted input list) becomes ``train-<i>`` and
``val-<i>``. A shard is done when both manifests exist, so resuming skips it; the
val shard is written even when empty for that reason. A shard of at least
``MIN_DOCUMENTS_FOR_VAL`` documents whose id hashes sent none to val gives it its last
document, so that a small corpus still has a validation split.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator

import xxhash

from data_pipeline.documents import BadRecordLog, Document, ShardReadError, read_documents
from data_pipeline.tokenizer.hf_tokenizer import HFTokenizerFiles
from data_pipeline.formats.tokenizer_files import TokenizerFiles
from data_pipeline.formats.token_shards import TokenShardWriter, shard_prefix

TRAIN, VAL = "train", "val"
SPLITS = (TRAIN, VAL)
# Documents per encode call: amortises the call overhead, keeps memory small.
ENCODE_BATCH = 64
HASH_RANGE = 2**64
MIN_DOCUMENTS_FOR_VAL = 10


def split_of(document: Document, val_fraction: float) -> str:
    """The document's split, from a hash of its id (of its text when it has none): stable
    across re-runs, worker counts and shard layouts."""
    key = document.id if document.id is not None else document.text
    return VAL if xxhash.xxh64_intdigest(key.encode("utf-8", "surrogatepass")) < val_fraction * HASH_RANGE else TRAIN


def is_done(output_dir: Path, index: int) -> bool:
    return all(shard_prefix(output_dir, split, index).with_suffix(".json").exists() for split in SPLITS)


def batched(documents: Iterable[Document], size: int) -> Iterator[list[Document]]:
    iterator = iter(documents)
    while batch := list(islice(iterator, size)):
        yield batch


@dataclass(frozen=True)
class ShardJob:
    index: int
    source: Path
    output_dir: Path
    tokenizer: TokenizerFiles | HFTokenizerFiles
    val_fraction: float
    add_bos: bool
    strict: bool


@dataclass
class ShardResult:
    index: int
    source: Path
    documents: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    num_bytes: int = 0
    cpu_seconds: float = 0.0
    bad_records: BadRecordLog = field(default_factory=BadRecordLog)
    # Set when the shard could not be read to its end; nothing was published for it.
    error: str | None = None


def abort_all(writers: dict[str, TokenShardWriter]) -> None:
    for writer in writers.values():
        writer.abort()


def tokenize_shard(job: ShardJob) -> ShardResult:
    start_cpu = time.process_time()
    result = ShardResult(job.index, job.source, bad_records=BadRecordLog(strict=job.strict))
    processor = job.tokenizer.processor()
    special = job.tokenizer.special_tokens
    writers = {
        split: TokenShardWriter(shard_prefix(job.output_dir, split, job.index), special.vocab_size, special.tokenizer_hash)
        for split in SPLITS
    }

    def write(split: str, ids: Any, num_bytes: int) -> None:
        writers[split].add_document(ids)
        result.documents[split] += 1
        result.tokens[split] += len(ids)
        result.num_bytes += num_bytes

    last_train: tuple[Any, int] | None = None  # held back: it may become the shard's only val document
    try:
        for batch in batched(read_documents(job.source, result.bad_records), ENCODE_BATCH):
            encoded = processor.encode(
                [document.text for document in batch],
                add_bos=job.add_bos,
                add_eos=True,
                num_threads=1,  # parallelism comes from the worker processes
                return_type="numpy",
            )
            for document, ids in zip(batch, encoded):
                if split_of(document, job.val_fraction) == VAL:
                    write(VAL, ids, document.num_bytes)
                    continue
                if last_train is not None:
                    write(TRAIN, *last_train)
                last_train = (ids, document.num_bytes)
        if last_train is not None:
            seen = sum(result.documents.values()) + 1
            wants_val = job.val_fraction > 0 and result.documents[VAL] == 0 and seen >= MIN_DOCUMENTS_FOR_VAL
            write(VAL if wants_val else TRAIN, *last_train)
    except ShardReadError as err:
        result.error = str(err)
        abort_all(writers)
    except BaseException:
        abort_all(writers)
        raise
    else:
        for writer in writers.values():
            writer.close()
    result.cpu_seconds = time.process_time() - start_cpu
    return result
