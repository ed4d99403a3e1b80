"""Tokenizing JSONL shards into packed token shards: exact, split by id, resumable."""
from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from data_pipeline.documents import BadRecordError, find_input_shards
from data_pipeline.tokenize import TokenizeConfig, tokenize_command, tokenize_corpus
from data_pipeline.tokenize_shard import SPLITS, TRAIN, VAL
from data_pipeline.token_directory import open_token_shards
from data_pipeline.formats.tokenizer_files import TokenizerFiles
from data_pipeline.tokenizer.train import TokenizerConfig, train_tokenizer
from data_pipeline.formats.token_shards import ShardError, TokenShard, find_shards, shard_prefix

REPO = Path(__file__).resolve().parents[2]
SYLLABLES = "ka to ri mu se na lo pe vi du 中 文 🎉".split()
WRITERS = {
    ".jsonl": lambda path, data: path.write_bytes(data),
    ".jsonl.gz": lambda path, data: path.write_bytes(gzip.compress(data)),
    ".jsonl.zst": lambda path, data: path.write_bytes(zstandard.ZstdCompressor().compress(data)),
}


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


def split_evenly(documents: list[dict], parts: int) -> list[list[dict]]:
    return [documents[start::parts] for start in range(parts)]


@pytest.fixture(scope="module")
def documents() -> list[dict]:
    return make_documents(240)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, documents) -> Path:
    return write_shards(tmp_path_factory.mktemp("corpus"), split_evenly(documents, 3))


def train_tiny_tokenizer(corpus: Path, output_dir: Path, vocab_size: int = 500) -> Path:
    train_tokenizer(TokenizerConfig(input=str(corpus), output_dir=str(output_dir), vocab_size=vocab_size,
                                    num_threads=1, hf_export=False))
    return output_dir


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, corpus) -> Path:
    return train_tiny_tokenizer(corpus, tmp_path_factory.mktemp("tokenizer"))


def run(corpus: Path, tokenizer_dir: Path, output_dir: Path, **overrides):
    settings = dict(input=str(corpus), tokenizer=str(tokenizer_dir), output_dir=str(output_dir), workers=1,
                    val_fraction=0.25, progress=False)
    return tokenize_corpus(TokenizeConfig(**{**settings, **overrides}))


def decoded_split(output_dir: Path, tokenizer_dir: Path, split: str, add_bos: bool = False) -> list[str]:
    """Every document of a split, decoded, after checking it is framed by BOS?/EOS."""
    files = TokenizerFiles.load(tokenizer_dir)
    processor, special = files.processor(), files.special_tokens
    texts = []
    for prefix in find_shards(output_dir, split):
        shard = TokenShard(prefix, expected_tokenizer_hash=special.tokenizer_hash)
        for index in range(shard.num_documents):
            ids = shard.document(index).tolist()
            assert ids[-1] == special.eos_id
            assert (ids[0] == special.bos_id) == add_bos
            texts.append(processor.decode(ids[int(add_bos) : -1]))
    return texts


def shard_files(output_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(output_dir.glob("*-*.*"))}


def test_shards_decode_to_the_input_documents(tmp_path, corpus, tokenizer_dir, documents):
    summary = run(corpus, tokenizer_dir, tmp_path)
    decoded = decoded_split(tmp_path, tokenizer_dir, TRAIN) + decoded_split(tmp_path, tokenizer_dir, VAL)
    assert sorted(decoded) == sorted(document["text"] for document in documents)
    assert summary.shards_done == 3 and not summary.failed
    assert sum(summary.documents.values()) == len(documents)
    assert summary.num_bytes == sum(len(document["text"].encode()) for document in documents)
    assert 0 < summary.documents[VAL] < summary.documents[TRAIN]


def test_manifests_count_the_tokens(tmp_path, corpus, tokenizer_dir, documents):
    run(corpus, tokenizer_dir, tmp_path, val_fraction=0.0)
    processor = TokenizerFiles.load(tokenizer_dir).processor()
    for index, shard_documents in enumerate(split_evenly(documents, 3)):
        manifest = TokenShard(shard_prefix(tmp_path, TRAIN, index)).manifest
        assert manifest.num_documents == len(shard_documents)
        assert manifest.num_tokens == sum(len(processor.encode(d["text"])) + 1 for d in shard_documents)
        assert TokenShard(shard_prefix(tmp_path, VAL, index)).num_documents == 0


def test_bos_is_optional(tmp_path, corpus, tokenizer_dir, documents):
    run(corpus, tokenizer_dir, tmp_path, add_bos=True, val_fraction=0.0)
    assert sorted(decoded_split(tmp_path, tokenizer_dir, TRAIN, add_bos=True)) == sorted(d["text"] for d in documents)


def test_split_is_independent_of_workers_and_shard_layout(tmp_path, corpus, tokenizer_dir, documents):
    run(corpus, tokenizer_dir, tmp_path / "one_worker", workers=1)
    run(corpus, tokenizer_dir, tmp_path / "two_workers", workers=2)
    assert shard_files(tmp_path / "one_worker") == shard_files(tmp_path / "two_workers")

    single_shard = write_shards(tmp_path / "single", [documents])
    run(single_shard, tokenizer_dir, tmp_path / "single_out")
    for split in SPLITS:
        assert sorted(decoded_split(tmp_path / "single_out", tokenizer_dir, split)) == sorted(
            decoded_split(tmp_path / "one_worker", tokenizer_dir, split)
        )


def test_resume_skips_finished_shards(tmp_path, corpus, tokenizer_dir):
    run(corpus, tokenizer_dir, tmp_path)
    before = {path.name: path.stat().st_mtime_ns for path in tmp_path.glob("*-0000[02].*")}
    for path in tmp_path.glob("*-00001.*"):
        path.unlink()
    shard_prefix(tmp_path, VAL, 2).with_suffix(".json").unlink()  # a shard cut off before its last manifest

    summary = run(corpus, tokenizer_dir, tmp_path)
    assert (summary.shards_skipped, summary.shards_done) == (1, 2)
    after = {path.name: path.stat().st_mtime_ns for path in tmp_path.glob("*-00000.*")}
    assert after == {name: mtime for name, mtime in before.items() if "-00000." in name}
    assert len(find_shards(tmp_path, TRAIN)) == len(find_shards(tmp_path, VAL)) == 3


def test_changed_settings_refuse_to_resume(tmp_path, corpus, tokenizer_dir):
    run(corpus, tokenizer_dir, tmp_path)
    with pytest.raises(ValueError, match="val_fraction"):
        run(corpus, tokenizer_dir, tmp_path, val_fraction=0.5)


def test_bad_records_are_counted_with_file_and_line(tmp_path, tokenizer_dir, documents):
    records = [*documents[:5], "{broken", {"id": "no-text"}, {"id": "n", "text": 7}, *documents[5:10]]
    corpus = write_shards(tmp_path / "corpus", [records, documents[10:20]])
    summary = run(corpus, tokenizer_dir, tmp_path / "out")
    assert summary.bad_records.count == 3
    assert summary.bad_records.examples[0].endswith("shard-000.jsonl:6: not a JSON line (Expecting property name "
                                                    "enclosed in double quotes: line 1 column 2 (char 1))")
    assert 'shard-000.jsonl:7: missing "text" field' in summary.bad_records.examples[1]
    assert sum(summary.documents.values()) == 20

    with pytest.raises(BadRecordError, match=r"shard-000\.jsonl:6"):
        run(corpus, tokenizer_dir, tmp_path / "strict", strict=True, workers=2)
    assert not list((tmp_path / "strict").glob("*.tmp"))


def test_a_corrupt_shard_fails_alone(tmp_path, tokenizer_dir, documents):
    corpus = write_shards(tmp_path / "corpus", split_evenly(documents, 3))
    zst = corpus / "shard-002.jsonl.zst"
    zst.write_bytes(zst.read_bytes()[:-40])
    config = TokenizeConfig(input=str(corpus), tokenizer=str(tokenizer_dir), output_dir=str(tmp_path / "out"),
                            workers=1, progress=False)
    with pytest.raises(RuntimeError, match=r"(?s)1 shards failed.*shard-002\.jsonl\.zst"):
        tokenize_command(config)
    assert len(find_shards(tmp_path / "out", TRAIN)) == 2
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_training_refuses_shards_of_another_tokenizer(tmp_path, corpus, tokenizer_dir):
    run(corpus, tokenizer_dir, tmp_path / "tokens")
    shards = open_token_shards(tmp_path / "tokens", tokenizer_dir, TRAIN)
    assert len(shards) == 3 and all(shard.num_tokens > 0 for shard in shards)

    other = train_tiny_tokenizer(corpus, tmp_path / "other_tokenizer", vocab_size=520)
    with pytest.raises(ShardError, match="re-tokenize"):
        open_token_shards(tmp_path / "tokens", other, TRAIN)


def test_command_line_prints_a_summary_and_writes_only_into_output_dir(tmp_path, corpus, tokenizer_dir):
    command = [sys.executable, "-m", "data_pipeline.tokenize", f"input={corpus}", f"tokenizer={tokenizer_dir}",
               "output_dir=out", "workers=1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("tokenized 3 shards (0 already done, 0 failed): 240 documents")
    assert "MB/s" in done.stdout and "tokens/s" in done.stdout
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]
    assert (tmp_path / "out" / "tokenizer_meta.json").exists()

    misspelt = subprocess.run([*command, "worker=2"], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
    assert misspelt.returncode != 0 and "worker" in misspelt.stderr


def test_a_directory_input_reads_its_top_level_only(tmp_path: Path) -> None:
    # A curation output_dir: clean shards on top, removed documents below, never to be trained on.
    (tmp_path / "removed").mkdir()
    for path in (tmp_path / "part-00000-0000.jsonl", tmp_path / "removed" / "filter-00000-0000.jsonl"):
        path.write_text('{"id": "a", "text": "x"}\n')
    assert find_input_shards(tmp_path) == [tmp_path / "part-00000-0000.jsonl"]
    assert len(find_input_shards(str(tmp_path / "**" / "*.jsonl"))) == 2  # a glob may recurse
