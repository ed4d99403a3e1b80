"""Small token corpora, a tiny tokenizer and tokenize settings for the tokenize and fingerprint tests."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import zstandard

from data_pipeline.tokenize.config import TokenizeConfig
from data_pipeline.tokenizer.train import TokenizerConfig, train_tokenizer
from tests.data_pipeline.helpers import with_overrides

SYLLABLES = "ka to ri mu se na lo pe vi du 中 文 🎉".split()
WRITERS = {
    ".jsonl": lambda path, data: path.write_bytes(data),
    ".jsonl.gz": lambda path, data: path.write_bytes(gzip.compress(data)),
    ".jsonl.zst": lambda path, data: path.write_bytes(zstandard.ZstdCompressor().compress(data)),
}
TOKENS_PER_SHARD = 500  # the test corpus: ~20 train shards, a few val shards


def make_documents(count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    documents = []
    for number in range(count):
        words = ("".join(rng.choices(SYLLABLES, k=rng.randint(1, 4))) for _ in range(rng.randint(0, 60)))
        text = " ".join(words) + rng.choice(["", "\n", "\n\n  \t", " 42\u2028x"])
        documents.append({"id": f"doc-{seed}-{number}", "text": text, "meta": {"n": number}})
    return documents


def write_shards(directory: Path, shards: list[list[dict | str]]) -> Path:
    """One shard per list, cycling through the three formats; a str is written as a raw line."""
    directory.mkdir(parents=True, exist_ok=True)
    suffixes = list(WRITERS)
    for index, records in enumerate(shards):
        suffix = suffixes[index % len(suffixes)]
        lines = (record if isinstance(record, str) else json.dumps(record) for record in records)
        WRITERS[suffix](directory / f"shard-{index:03d}{suffix}", ("\n".join(lines) + "\n").encode())
    return directory


def train_tiny_tokenizer(corpus: Path, output_dir: Path, vocab_size: int = 500) -> Path:
    train_tokenizer(
        TokenizerConfig(
            input=str(corpus), output_dir=str(output_dir), vocab_size=vocab_size, num_threads=1, hf_export=False
        )
    )
    return output_dir


def settings(corpus: Path, tokenizer_dir: Path, output_dir: Path, **overrides) -> TokenizeConfig:
    config = TokenizeConfig(
        input=str(corpus),
        tokenizer=str(tokenizer_dir),
        output_dir=str(output_dir),
        workers=1,
        val_fraction=0.25,
        tokens_per_shard=TOKENS_PER_SHARD,
        progress=False,
    )
    return with_overrides(config, **overrides)
