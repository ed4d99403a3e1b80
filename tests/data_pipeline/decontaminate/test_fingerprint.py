"""The train split's n-gram fingerprint that tokenize writes beside the token shards: exactly
the distinct n-grams of the train documents' text, the same for any units, workers, spills and
hash ranges, and absent with fingerprint_ngram=null."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_pipeline.decontaminate import fingerprint as fingerprint_module
from data_pipeline.decontaminate.fingerprint import FINGERPRINT_FILE, Fingerprint
from data_pipeline.decontaminate.ngrams import text_gram_hashes
from data_pipeline.document import Document
from data_pipeline.tokenize.cli import tokenize_corpus
from data_pipeline.tokenize.encode import id_hash, is_val
from tests.data_pipeline.tokenize.helpers import make_documents, settings, train_tiny_tokenizer, write_shards


def train_texts(documents: list[dict]) -> list[str]:
    """The texts tokenize puts in the train split (val_fraction=0.25, by id hash)."""
    return [d["text"] for d in documents if not is_val(id_hash(Document(d["id"], d["text"], {}, "", 0)), 0.25)]


@pytest.fixture(scope="module")
def corpus_and_tokenizer(tmp_path_factory) -> tuple[Path, Path, list[dict]]:
    documents = make_documents(240, seed=3)
    corpus = write_shards(tmp_path_factory.mktemp("fingerprint_corpus"), [documents])
    return corpus, train_tiny_tokenizer(corpus, tmp_path_factory.mktemp("fingerprint_tokenizer")), documents


def test_fingerprint_holds_the_train_grams_for_any_units_and_spills(
    tmp_path, corpus_and_tokenizer, monkeypatch
) -> None:
    corpus, tokenizer, documents = corpus_and_tokenizer
    train = train_texts(documents)
    reference = np.unique(np.concatenate([text_gram_hashes(text, 13) for text in train]))
    val_only = [d["text"] for d in documents if d["text"] not in train and len(text_gram_hashes(d["text"], 13))]
    assert len(reference) > 1000 and val_only

    unit_mb = (corpus / "shard-000.jsonl").stat().st_size / 8 / 1e6 * 1.001
    tokenize_corpus(
        settings(corpus, tokenizer, tmp_path / "eight", unit_size_mb=unit_mb)
    )  # (workers: test_tokenize.py)
    with monkeypatch.context() as patch:  # one unit, in this process: spilling every 50 hashes, 7 ranges
        patch.setattr(fingerprint_module, "RUN_HASHES", 50)
        patch.setattr(fingerprint_module, "RANGE_HASHES", len(reference) // 6)
        tokenize_corpus(settings(corpus, tokenizer, tmp_path / "one"))
        assert len(list((tmp_path / "one" / "_work" / "done" / "fingerprint").iterdir())) == 7
    for name in ("one", "eight"):
        found = np.fromfile(tmp_path / name / FINGERPRINT_FILE, dtype=np.uint64)
        assert np.array_equal(found, reference), name
        assert not (tmp_path / name / "_work" / "fingerprint").exists()  # runs and ranges removed
    fingerprint = Fingerprint.find(tmp_path / "one")
    assert fingerprint.meta["hashes"] == len(reference) and fingerprint.n == 13
    assert all(fingerprint.overlaps(text.upper()) for text in train if len(text_gram_hashes(text, 13)))
    assert not any(fingerprint.overlaps(text) for text in val_only[:5] if not any(text in t for t in train))


def test_gram_length_and_switching_off(tmp_path, corpus_and_tokenizer) -> None:
    corpus, tokenizer, documents = corpus_and_tokenizer
    tokenize_corpus(settings(corpus, tokenizer, tmp_path / "five", fingerprint_ngram=5))
    train = train_texts(documents)
    reference = np.unique(np.concatenate([text_gram_hashes(text, 5) for text in train]))
    assert np.array_equal(np.fromfile(tmp_path / "five" / FINGERPRINT_FILE, dtype=np.uint64), reference)
    assert Fingerprint.find(tmp_path / "five").n == 5
    tokenize_corpus(settings(corpus, tokenizer, tmp_path / "out", fingerprint_ngram=None))
    assert Fingerprint.find(tmp_path / "out") is None and not (tmp_path / "out" / FINGERPRINT_FILE).exists()
    with pytest.raises(ValueError, match=r"fingerprint_ngram=0: need >= 1"):
        tokenize_corpus(settings(corpus, tokenizer, tmp_path / "bad", fingerprint_ngram=0))
