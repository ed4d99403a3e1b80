"""Tokenizing curated text into fixed-size packed token shards: exact, split by id, the same
for any number of units, workers and executors, resumable unit by unit."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import xxhash
import zstandard

from data_pipeline.formats.token_shards import ShardError, SplitIndex, TokenShard, find_shards
from data_pipeline.formats.tokenizer_files import TokenizerFiles
from data_pipeline.io.readers import resolve_corpus_inputs
from data_pipeline.tokenize.cli import tokenize_command, tokenize_corpus
from data_pipeline.tokenize.output_dir import SPLITS, TRAIN, VAL
from pretrain.data.windows import PackedWindows
from pretrain.objectives.base import document_ids
from tests.data_pipeline.helpers import wait_for_worker_reading
from tests.data_pipeline.tokenize.helpers import (
    TOKENS_PER_SHARD,
    make_documents,
    settings,
    train_tiny_tokenizer,
    write_shards,
)

REPO = Path(__file__).resolve().parents[3]


def split_evenly(documents: list[dict], parts: int) -> list[list[dict]]:
    return [documents[start::parts] for start in range(parts)]


@pytest.fixture(scope="module")
def documents() -> list[dict]:
    return make_documents(240)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, documents) -> Path:
    return write_shards(tmp_path_factory.mktemp("corpus"), split_evenly(documents, 3))


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, corpus) -> Path:
    return train_tiny_tokenizer(corpus, tmp_path_factory.mktemp("tokenizer"))


def run(corpus: Path, tokenizer_dir: Path, output_dir: Path, **overrides):
    return tokenize_corpus(settings(corpus, tokenizer_dir, output_dir, **overrides))


def stream(output_dir: Path, split: str) -> np.ndarray:
    """The split's tokens, its shards in the order of its index."""
    index = SplitIndex.load(output_dir, split)
    return np.concatenate(
        [np.asarray(TokenShard(output_dir / shard["name"]).tokens, dtype=np.int64) for shard in index.shards]
        or [np.zeros(0, np.int64)]
    )


def decoded_split(output_dir: Path, tokenizer_dir: Path, split: str, add_bos: bool = False) -> list[str]:
    """Every document of a split, decoded, after checking it is framed by BOS?/EOS."""
    files = TokenizerFiles.load(tokenizer_dir)
    processor, special = files.processor(), files.special_tokens
    tokens = stream(output_dir, split)
    assert not len(tokens) or tokens[-1] == special.eos_id
    texts = []
    for ids in np.split(tokens, np.flatnonzero(tokens == special.eos_id)[:-1] + 1) if len(tokens) else []:
        assert (ids[0] == special.bos_id) == add_bos
        texts.append(processor.decode(ids[int(add_bos) : -1].tolist()))
    return texts


def shard_files(output_dir: Path) -> dict[str, bytes]:
    return {
        path.name: path.read_bytes()
        for path in sorted(output_dir.glob("*-*.*"))
        if path.suffix in (".bin", ".idx", ".json")
    }


def check_fixed_size(output_dir: Path, tokens_per_shard: int) -> None:
    """Every shard but a split's last holds exactly tokens_per_shard tokens; the index agrees."""
    for split in SPLITS:
        index = SplitIndex.load(output_dir, split)
        sizes = [TokenShard(output_dir / shard["name"]).num_tokens for shard in index.shards]
        assert sizes == [shard["num_tokens"] for shard in index.shards]
        assert [prefix.name for prefix in find_shards(output_dir, split)] == [shard["name"] for shard in index.shards]
        assert all(size == tokens_per_shard for size in sizes[:-1]) and 0 < sizes[-1] <= tokens_per_shard


def test_shards_decode_to_the_input_documents(tmp_path, corpus, tokenizer_dir, documents):
    summary = run(corpus, tokenizer_dir, tmp_path)
    decoded = decoded_split(tmp_path, tokenizer_dir, TRAIN) + decoded_split(tmp_path, tokenizer_dir, VAL)
    assert sorted(decoded) == sorted(document["text"] for document in documents)
    assert summary.units == 3 and sum(summary.documents.values()) == len(documents)
    assert summary.num_bytes == sum(len(document["text"].encode()) for document in documents)
    assert 0 < summary.documents[VAL] < summary.documents[TRAIN]
    check_fixed_size(tmp_path, TOKENS_PER_SHARD)
    assert summary.shards[TRAIN] == len(find_shards(tmp_path, TRAIN)) > 5  # documents cross shard boundaries
    processor = TokenizerFiles.load(tokenizer_dir).processor()
    assert summary.tokens[TRAIN] + summary.tokens[VAL] == sum(len(processor.encode(d["text"])) + 1 for d in documents)
    assert json.loads((tmp_path / "summary.json").read_text())["tokens"] == summary.tokens
    assert not (tmp_path / "_work" / "runs").exists()  # the unit runs are removed once packed


def test_bos_is_optional(tmp_path, corpus, tokenizer_dir, documents):
    run(corpus, tokenizer_dir, tmp_path, add_bos=True, val_fraction=0.0)
    assert sorted(decoded_split(tmp_path, tokenizer_dir, TRAIN, add_bos=True)) == sorted(d["text"] for d in documents)
    assert not find_shards(tmp_path, VAL)


def test_units_workers_and_ray_give_identical_shards(tmp_path, tokenizer_dir, documents):
    """One unit on one worker, 8 byte-range units on 2 workers, and Ray: the same shard files,
    byte for byte; every shard but the last of each split exactly tokens_per_shard tokens."""
    single_file = write_shards(tmp_path / "single", [documents])  # uncompressed JSON lines: splittable
    unit_mb = (single_file / "shard-000.jsonl").stat().st_size / 8 / 1e6 * 1.001
    outputs = {
        "one": {},
        "eight": dict(unit_size_mb=unit_mb, workers=2),
        "ray": dict(unit_size_mb=unit_mb, executor__kind="ray", executor__ray__num_cpus=2),
    }
    for name, overrides in outputs.items():
        summary = run(single_file, tokenizer_dir, tmp_path / name, **overrides)
        assert summary.units == (1 if name == "one" else 8)
        check_fixed_size(tmp_path / name, TOKENS_PER_SHARD)
    reference = shard_files(tmp_path / "one")
    assert len(reference) > 3 * 10
    for name in outputs:
        assert shard_files(tmp_path / name) == reference, name
    for split in SPLITS:
        assert (tmp_path / "eight" / f"{split}.shards.json").read_text() == (
            tmp_path / "one" / f"{split}.shards.json"
        ).read_text()


def test_split_does_not_depend_on_the_file_layout(tmp_path, corpus, tokenizer_dir, documents):
    run(corpus, tokenizer_dir, tmp_path / "three_files")
    run(write_shards(tmp_path / "single", [documents]), tokenizer_dir, tmp_path / "one_file")
    for split in SPLITS:
        assert sorted(decoded_split(tmp_path / "one_file", tokenizer_dir, split)) == sorted(
            decoded_split(tmp_path / "three_files", tokenizer_dir, split)
        )


def test_a_small_corpus_still_gets_a_val_split_the_same_for_any_units(tmp_path, tokenizer_dir, documents):
    single_file = write_shards(tmp_path / "single", [documents[:40]])
    unit_mb = (single_file / "shard-000.jsonl").stat().st_size / 4 / 1e6 * 1.001
    summary = run(single_file, tokenizer_dir, tmp_path / "one", val_fraction=1e-9)
    run(single_file, tokenizer_dir, tmp_path / "four", val_fraction=1e-9, unit_size_mb=unit_mb)
    assert len(decoded_split(tmp_path / "one", tokenizer_dir, VAL)) == 4 == summary.documents[VAL]  # 40 documents: 4
    assert summary.tokens[VAL] == len(stream(tmp_path / "one", VAL)) and summary.documents[TRAIN] == 36
    by_hash = sorted(documents[:40], key=lambda document: xxhash.xxh64_intdigest(document["id"].encode()))
    assert decoded_split(tmp_path / "one", tokenizer_dir, VAL) == [
        d["text"] for d in documents[:40] if d in by_hash[:4]
    ]
    assert shard_files(tmp_path / "one") == shard_files(tmp_path / "four")
    train = decoded_split(tmp_path / "one", tokenizer_dir, TRAIN)
    assert sorted(train + decoded_split(tmp_path / "one", tokenizer_dir, VAL)) == sorted(
        d["text"] for d in documents[:40]
    )


def test_windows_and_document_masking_see_documents_across_shard_boundaries(tmp_path, corpus, tokenizer_dir):
    """The loader's windows are the split's stream cut shard by shard, and the document ids
    that document masking uses are the stream's own, also where a document runs on into the
    next shard."""
    run(corpus, tokenizer_dir, tmp_path, tokens_per_shard=97)
    eos = TokenizerFiles.load(tokenizer_dir).special_tokens.eos_id
    tokens = stream(tmp_path, TRAIN)
    index = SplitIndex.load(tmp_path, TRAIN)
    assert any(TokenShard(tmp_path / shard["name"]).tokens[-1] != eos for shard in index.shards[:-1])  # cut documents
    is_eos = tokens == eos
    global_document = np.cumsum(is_eos) - is_eos
    window = 16
    windows = PackedWindows.open(tmp_path, TRAIN, window, index.tokenizer_hash)
    starts = [
        shard * 97 + offset
        for shard in range(len(index.shards))
        for offset in range(0, index.shards[shard]["num_tokens"] - window + 1, window)
    ]
    assert len(windows) == len(starts)
    for number, start in enumerate(starts):
        assert windows[number].tolist() == tokens[start : start + window].tolist()
        ids = document_ids(torch.as_tensor(windows[number].astype(np.int64))[None], eos)[0].numpy()
        assert ids.tolist() == (global_document[start : start + window] - global_document[start]).tolist()


def test_a_rerun_redoes_only_the_missing_units(tmp_path, tokenizer_dir, documents):
    bad = [*documents[200:210], "{broken", *documents[210:220]]
    corpus = write_shards(tmp_path / "corpus", [documents[:100], documents[100:200], bad])
    with pytest.raises(ValueError, match=r"shard-002\.jsonl\.zst:11: invalid_json"):
        run(corpus, tokenizer_dir, tmp_path / "out", strict=True)
    markers = tmp_path / "out" / "_work" / "done" / "encode"
    done = {path.name: path.stat().st_mtime_ns for path in markers.glob("*.done.json")}
    assert sorted(done) == ["00000.done.json", "00001.done.json"]  # the units before the bad one stay done

    fixed = "".join(json.dumps(record) + "\n" for record in bad if not isinstance(record, str))
    (corpus / "shard-002.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(fixed.encode()))  # the same units
    summary = run(corpus, tokenizer_dir, tmp_path / "out", strict=True)
    assert summary.units_done_before == 2
    assert {path.name: path.stat().st_mtime_ns for path in markers.glob("*.done.json") if path.name in done} == done
    fresh = run(corpus, tokenizer_dir, tmp_path / "fresh")
    assert shard_files(tmp_path / "out") == shard_files(tmp_path / "fresh")
    assert fresh.documents == summary.documents and sum(summary.documents.values()) == 220


def test_changed_settings_refuse_to_resume(tmp_path, corpus, tokenizer_dir):
    run(corpus, tokenizer_dir, tmp_path)
    with pytest.raises(ValueError, match="val_fraction"):
        run(corpus, tokenizer_dir, tmp_path, val_fraction=0.5)
    with pytest.raises(ValueError, match="tokens_per_shard"):
        run(corpus, tokenizer_dir, tmp_path, tokens_per_shard=1000)
    assert run(corpus, tokenizer_dir, tmp_path, workers=2).units_done_before == 3  # a runtime setting may change
    (tmp_path / "_work" / "run.json").unlink()  # shards whose run is unknown (an earlier version's) are not mixed in
    with pytest.raises(ValueError, match="holds token shards of another run"):
        run(corpus, tokenizer_dir, tmp_path)


def test_bad_records_are_counted_with_file_and_line(tmp_path, tokenizer_dir, documents):
    records = [*documents[:5], "{broken", {"id": "no-text"}, {"id": "n", "text": 7}, *documents[5:10]]
    corpus = write_shards(tmp_path / "corpus", [records, documents[10:20]])
    summary = run(corpus, tokenizer_dir, tmp_path / "out")
    assert summary.bad_input["count"] == 3
    assert [(event["file"], event["line"], event["reason"]) for event in summary.bad_input["events"]] == [
        ("shard-000.jsonl", 6, "invalid_json"),
        ("shard-000.jsonl", 7, "missing_text"),
        ("shard-000.jsonl", 8, "missing_text"),
    ]
    assert "shard-000.jsonl:6: invalid_json" in str(summary)
    assert sum(summary.documents.values()) == 20

    with pytest.raises(ValueError, match=r"shard-000\.jsonl:6: invalid_json"):
        run(corpus, tokenizer_dir, tmp_path / "strict", strict=True, workers=2)
    assert not list((tmp_path / "strict").rglob("*.tmp"))


def test_a_corrupt_file_loses_only_its_unread_end(tmp_path, tokenizer_dir, documents):
    corpus = write_shards(tmp_path / "corpus", split_evenly(documents, 3))
    zst = corpus / "shard-002.jsonl.zst"
    zst.write_bytes(zst.read_bytes()[:-40])
    summary = run(corpus, tokenizer_dir, tmp_path / "out")
    (event,) = summary.bad_input["events"]
    assert event["file"] == "shard-002.jsonl.zst" and event["reason"] == "corrupt_file" and event["line"] >= 1
    # the other files whole, the corrupt one up to the line it broke at
    assert sum(summary.documents.values()) == 160 + event["line"] - 1


def test_training_refuses_shards_of_another_tokenizer(tmp_path, corpus, tokenizer_dir):
    run(corpus, tokenizer_dir, tmp_path / "tokens")
    prefixes = find_shards(tmp_path / "tokens", TRAIN)
    own_hash = TokenizerFiles.load(tokenizer_dir).special_tokens.tokenizer_hash
    shards = [TokenShard(prefix, expected_tokenizer_hash=own_hash) for prefix in prefixes]
    assert len(shards) > 5 and all(shard.num_tokens > 0 for shard in shards)

    other = train_tiny_tokenizer(corpus, tmp_path / "other_tokenizer", vocab_size=520)
    other_hash = TokenizerFiles.load(other).special_tokens.tokenizer_hash
    with pytest.raises(ShardError, match="re-tokenize"):
        TokenShard(prefixes[0], expected_tokenizer_hash=other_hash)
    with pytest.raises(ShardError, match="re-tokenize"):
        PackedWindows.open(tmp_path / "tokens", TRAIN, 8, other_hash)


def test_command_line_prints_a_summary_and_writes_only_into_output_dir(tmp_path, corpus, tokenizer_dir):
    command = [
        sys.executable,
        "-m",
        "data_pipeline.tokenize",
        f"input={corpus}",
        f"tokenizer={tokenizer_dir}",
        "output_dir=out",
        "workers=1",
        "tokens_per_shard=1000",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("tokenized 3 units (0 already done): 240 documents")
    assert "MB/s" in done.stdout and "tokens/s" in done.stdout and "val_fraction=0.005" in done.stdout
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]
    assert (tmp_path / "out" / "tokenizer_meta.json").exists()
    assert len(find_shards(tmp_path / "out", TRAIN)) == SplitIndex.load(tmp_path / "out", TRAIN).num_tokens // 1000 + 1

    misspelt = subprocess.run(
        [*command, "worker=2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert misspelt.returncode != 0 and "worker" in misspelt.stderr


def test_a_killed_worker_fails_its_unit_in_one_line(tmp_path, tokenizer_dir, documents):
    folder = tmp_path / "in"
    write_shards(folder, [documents[:10]])
    slow = [{"id": f"slow-{n}", "text": document["text"]} for n in range(40) for document in documents]
    (folder / "slow.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in slow).encode()))
    command = [
        sys.executable,
        "-m",
        "data_pipeline.tokenize",
        f"input={folder}",
        f"tokenizer={tokenizer_dir}",
        f"output_dir={tmp_path}/out",
        "workers=2",
        "progress=false",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    worker = wait_for_worker_reading(process.pid, "slow.jsonl.gz", timeout_s=60)
    os.kill(worker.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1 and time.monotonic() - killed_at < 10
    (line,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert "encode unit 00001 (slow.jsonl.gz): the worker process killed by SIGKILL" in line and "out-of-memory" in line
    assert (tmp_path / "out" / "_work" / "done" / "encode" / "00000.done.json").exists()  # the other unit stays done


def test_a_directory_input_reads_its_top_level_only(tmp_path: Path) -> None:
    # A curation output_dir: clean shards on top, removed documents below, never to be trained on.
    (tmp_path / "removed").mkdir()
    for path in (tmp_path / "part-00000-0000.jsonl", tmp_path / "removed" / "filter-00000-0000.jsonl"):
        path.write_text('{"id": "a", "text": "x"}\n')
    (tmp_path / "report.json").write_text('{"output": {"documents": 1}}\n')
    assert [source.name for source in resolve_corpus_inputs(str(tmp_path))] == ["part-00000-0000.jsonl"]
    assert len(resolve_corpus_inputs(str(tmp_path / "**" / "*.jsonl"))) == 2  # a glob may recurse


def test_settings_that_cannot_work_are_one_clear_error(tmp_path, corpus, tokenizer_dir):
    with pytest.raises(ValueError, match=r"tokens_per_shard=0: need at least 1"):
        tokenize_command(replace(settings(corpus, tokenizer_dir, tmp_path), tokens_per_shard=0))
    assert not (tmp_path / "_work").exists()
