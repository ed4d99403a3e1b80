"""A small generated token corpus that a tiny model can learn from."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pretrain.data.shards import TokenShardWriter, shard_prefix
from pretrain.special_tokens import SpecialTokens

VOCAB = 256
SPECIAL = SpecialTokens.synthetic(VOCAB, num_sentinels=100)
FIRST_ORDINARY = 105


def markov_documents(count: int, seed: int) -> list[np.ndarray]:
    """Documents from a mostly deterministic chain over the ordinary ids, each ending in EOS."""
    rng = np.random.default_rng(seed)
    span = 40  # few distinct ids: even the unigram statistics are far below a uniform guess
    documents = []
    for _ in range(count):
        length = int(rng.integers(20, 200))
        ids = np.empty(length + 1, dtype=np.int64)
        ids[0] = rng.integers(span)
        for i in range(1, length):
            ids[i] = (ids[i - 1] * 7 + 3) % span if rng.random() < 0.9 else rng.integers(span)
        ids[:length] += FIRST_ORDINARY
        ids[length] = SPECIAL.eos_id
        documents.append(ids)
    return documents


def write_corpus(directory: Path, train_shards: int = 2, docs_per_shard: int = 120, seed: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    SPECIAL.save(directory)
    for index in range(train_shards):
        with TokenShardWriter(shard_prefix(directory, "train", index), VOCAB, SPECIAL.tokenizer_hash) as writer:
            writer.add_documents(markov_documents(docs_per_shard, seed * 100 + index))
    with TokenShardWriter(shard_prefix(directory, "val", 0), VOCAB, SPECIAL.tokenizer_hash) as writer:
        writer.add_documents(markov_documents(40, seed * 100 + 99))
    return directory


@pytest.fixture(scope="session")
def token_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("tokens"))
