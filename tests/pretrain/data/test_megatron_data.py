"""Megatron-LM indexed datasets (.bin/.idx written by megatron-core's own builder) as a
training source: the same tokens train to the same losses as in our token shards."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from data_pipeline.formats.token_shards import ShardError
from pretrain.config import load_train_config
from pretrain.data.megatron import MegatronTokens, is_megatron_prefix
from pretrain.parallel.process_groups import init_distributed
from pretrain.training.trainer import Trainer
from tests.pretrain.conftest import markov_documents, write_corpus

DOCUMENTS = markov_documents(120, seed=0)  # the documents of write_corpus's train-00000 (seed 0)


def write_megatron(prefix: Path, documents: list[np.ndarray]) -> Path:
    """Write with Megatron's own builder, so the test checks the published format itself."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.uint16)
    for document in documents:
        builder.add_document(torch.from_numpy(document), [len(document)])
    builder.finalize(f"{prefix}.idx")
    return prefix


@pytest.fixture(scope="module")
def megatron_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_megatron(tmp_path_factory.mktemp("megatron") / "corpus_text_document", DOCUMENTS)


def test_reader_sees_the_documents_as_one_stream(megatron_prefix: Path, token_corpus: Path) -> None:
    assert is_megatron_prefix(megatron_prefix)
    assert not is_megatron_prefix(token_corpus / "train-00000")  # our own shards have a .idx too
    tokens = MegatronTokens(megatron_prefix)
    assert tokens.num_sequences == len(DOCUMENTS)
    np.testing.assert_array_equal(tokens.tokens, np.concatenate(DOCUMENTS))


def trainer(run_dir: Path, *data: str) -> Trainer:
    settings = [*data, f"run_dir={run_dir}", "train.seq_len=32", "train.micro_batch_size=4"]
    settings += ["train.global_batch_size=8", "train.max_steps=3", "train.log_every=1", "train.eval_every=0"]
    settings += ["train.save_every=0", "optim.lr=3e-3", "optim.warmup_steps=2", "logging.progress_bar=false"]
    return Trainer(load_train_config(settings), init_distributed())


def test_megatron_source_trains_like_the_same_tokens_in_our_shards(
    megatron_prefix: Path, tmp_path: Path, capfd
) -> None:
    ours = write_corpus(tmp_path / "ours", train_shards=1)  # train-00000 holds DOCUMENTS

    def losses(run: Trainer) -> list[float]:
        return [record["loss"] for record in run.fit()]

    reference = losses(trainer(tmp_path / "ours", f"data.path={ours}"))
    assert losses(trainer(tmp_path / "megatron", f"data.path={megatron_prefix}", f"data.tokenizer={ours}")) == reference
    assert len(set(reference)) == 3  # it trained: the loss moved
    assert "--append-eod" not in capfd.readouterr().err  # these documents end with EOS


def test_documents_without_eos_are_read_as_they_are_and_reported(tmp_path: Path, capfd) -> None:
    ours = write_corpus(tmp_path / "ours", train_shards=1)
    bare = write_megatron(tmp_path / "bare", [document[:-1] for document in DOCUMENTS])  # no --append-eod
    np.testing.assert_array_equal(MegatronTokens(bare).tokens, np.concatenate([d[:-1] for d in DOCUMENTS]))
    trainer(tmp_path / "run", f"data.path={bare}", f"data.tokenizer={ours}")
    assert f"data.path={bare}: documents do not end with EOS" in capfd.readouterr().err


def test_broken_pairs_are_one_clear_error(megatron_prefix: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut"
    shutil.copy(f"{megatron_prefix}.idx", f"{cut}.idx")
    Path(f"{cut}.bin").write_bytes(Path(f"{megatron_prefix}.bin").read_bytes()[:100])
    with pytest.raises(ShardError, match=r"cut\.bin: 100 bytes, but .* indexes \d+ bytes"):
        MegatronTokens(cut)
    floats = tmp_path / "floats"
    index = bytearray(Path(f"{megatron_prefix}.idx").read_bytes())
    index[17] = 7  # the dtype code byte, after the magic and version: float32
    Path(f"{floats}.idx").write_bytes(bytes(index))
    shutil.copy(f"{megatron_prefix}.bin", f"{floats}.bin")
    with pytest.raises(ShardError, match="dtype code 7 is not an integer token type"):
        MegatronTokens(floats)
