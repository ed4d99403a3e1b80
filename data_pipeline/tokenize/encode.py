"""Stage 1, one job per input unit: read its documents, encode them a batch at a time and
append each to its split's token run (a token shard under _work/runs). Memory holds one
batch; the runs are published (renamed) when the unit ends, then the executor's marker.

The split of a document comes from a hash of its id: stable across reruns, unit sizes and
worker counts. The unit's stats (its marker) say how many tokens each run holds, which is
all stage 2 needs to place every unit's tokens in the split's one stream."""

from __future__ import annotations

import heapq
import time
from itertools import islice
from typing import Any, Iterable, Iterator

import xxhash

from data_pipeline.decontaminate.fingerprint import FingerprintRunWriter
from data_pipeline.document import Document
from data_pipeline.formats.token_shards import TokenShardWriter
from data_pipeline.formats.tokenizer_files import TokenizerFiles
from data_pipeline.io.readers import BadInput, BadInputTally, read_unit
from data_pipeline.io.units import InputUnit
from data_pipeline.tokenize.config import TokenizeConfig
from data_pipeline.tokenize.output_dir import SPLITS, TRAIN, VAL, VAL_FALLBACK_DOCUMENTS, TokenizeOutputDir
from data_pipeline.tokenizer.hf_tokenizer import HFTokenizerFiles

# Records per encode call: amortises the call overhead, keeps memory small.
ENCODE_BATCH = 64
HASH_RANGE = 2**64


def id_hash_of(document_id: str) -> int:
    return xxhash.xxh64_intdigest(document_id.encode("utf-8", "surrogatepass"))


def id_hash(document: Document) -> int:
    return id_hash_of(document.id)


def is_val(hashed: int, val_fraction: float) -> bool:
    return hashed < val_fraction * HASH_RANGE


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def keep_smallest(heap: list[tuple[int, int, int]], entry: tuple[int, int, int]) -> None:
    """Keep the VAL_FALLBACK_DOCUMENTS entries of largest -hash (smallest hash) in ``heap``."""
    if len(heap) < VAL_FALLBACK_DOCUMENTS:
        heapq.heappush(heap, entry)
    elif entry[0] > heap[0][0]:
        heapq.heapreplace(heap, entry)


def encode_unit(
    unit: InputUnit, config: TokenizeConfig, tokenizer: TokenizerFiles | HFTokenizerFiles
) -> dict[str, Any]:
    """Encode one input unit into its runs; returns its stats (the unit's marker)."""
    start_cpu = time.process_time()
    layout = TokenizeOutputDir(config.output_dir)
    processor = tokenizer.processor()
    special = tokenizer.special_tokens
    bad_input = BadInputTally(config.strict)
    stats: dict[str, Any] = {
        "unit": str(unit),
        "bytes": 0,
        "documents": dict.fromkeys(SPLITS, 0),
        "tokens": dict.fromkeys(SPLITS, 0),
        # the train documents of smallest id hash: [hash, first token, end token] in the run
        "smallest_train_hashes": [],
    }
    smallest: list[tuple[int, int, int]] = []  # a heap of (-hash, start, stop): the largest of them on top
    writers = {
        split: TokenShardWriter(layout.run_prefix(split, unit.index), special.vocab_size, special.tokenizer_hash)
        for split in SPLITS
    }
    fingerprint = None
    if config.fingerprint_ngram is not None:  # from the text: tokens have no words
        fingerprint = FingerprintRunWriter(layout.fingerprint / f"run-{unit.index:05d}", config.fingerprint_ngram)
    try:
        for batch in batched(read_unit(unit, config.reader), ENCODE_BATCH):
            documents = []
            for item in batch:
                if isinstance(item, BadInput):
                    bad_input.add(item)
                else:
                    documents.append(item)
            encoded = processor.encode(
                [document.text for document in documents],
                add_bos=config.add_bos,
                add_eos=True,
                num_threads=1,
                return_type="numpy",
            )  # parallelism comes from the units
            for document, ids in zip(documents, encoded):
                hashed = id_hash(document)
                split = VAL if is_val(hashed, config.val_fraction) else TRAIN
                writer = writers[split]
                if split == TRAIN:
                    keep_smallest(smallest, (-hashed, writer.num_tokens, writer.num_tokens + len(ids)))
                    if fingerprint is not None:
                        fingerprint.add(document.text)
                writer.add_document(ids)
                stats["documents"][split] += 1
                stats["tokens"][split] += len(ids)
                stats["bytes"] += len(document.text.encode("utf-8"))
    except BaseException:
        for writer in writers.values():
            writer.abort()
        if fingerprint is not None:
            fingerprint.abort()
        raise
    for writer in writers.values():
        writer.close()
    stats["smallest_train_hashes"] = sorted([-negated, start, stop] for negated, start, stop in smallest)
    stats["bad_input"] = bad_input.stats()
    if fingerprint is not None:
        stats["fingerprint"] = fingerprint.close()
    stats["cpu_seconds"] = time.process_time() - start_cpu
    return stats
