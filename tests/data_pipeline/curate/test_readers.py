"""Input formats, ids and metadata, and every kind of bad input reported with file and line."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_pipeline.curate.config import ReaderConfig
from data_pipeline.io.readers import BadInput, read_source, resolve_inputs


def read_all(spec, config: ReaderConfig | None = None) -> list:
    return [item for source in resolve_inputs(spec) for item in read_source(source, config or ReaderConfig())]


def test_formats_ids_and_metadata(tmp_path, files):
    files.zst(tmp_path / "pile" / "p.jsonl.zst", [{"text": "pile", "meta": {"id": "P1", "lang": "en"}}])
    files.gz(tmp_path / "c4" / "c.json.gz", [{"text": "c4", "url": "https://x/1", "timestamp": "t"}])
    files.jsonl(tmp_path / "plain" / "j.jsonl", [{"id": 7, "text": "plain", "source": "s"}])
    files.gz(tmp_path / "plain" / "g.jsonl.gz", [{"text": "gz"}])
    pq.write_table(pa.table({"text": ["pq1", "pq2"], "score": [1, 2]}), tmp_path / "t.parquet")
    docs = {doc.text: doc for doc in read_all(str(tmp_path))}
    assert docs["pile"].id == "P1" and docs["pile"].meta == {"id": "P1", "lang": "en"}
    assert docs["c4"].id == "c4/c.json.gz:1" and docs["c4"].meta == {"url": "https://x/1", "timestamp": "t"}
    assert docs["plain"].id == "7" and docs["plain"].meta == {"source": "s"}
    assert docs["gz"].id == "plain/g.jsonl.gz:1"
    assert docs["pq2"].id == "t.parquet:2" and docs["pq2"].meta == {"score": 2}


def test_inputs_sorted_and_indexed_from_globs_and_lists(tmp_path, files):
    for name in ("b", "a", "c"):
        files.jsonl(tmp_path / f"{name}.jsonl", [{"text": name}])
    sources = resolve_inputs([str(tmp_path / "c.jsonl"), str(tmp_path / "[ab].jsonl")])
    assert [(s.index, s.name) for s in sources] == [(0, "a.jsonl"), (1, "b.jsonl"), (2, "c.jsonl")]
    with pytest.raises(ValueError, match="matches no file"):
        resolve_inputs(str(tmp_path / "*.parquet"))


def test_bad_records_are_reported_and_reading_goes_on(tmp_path, files):
    path = tmp_path / "bad.jsonl"
    lines = ['{"text": "good 1"}', "not json", '{"body": "no text"}', "[1, 2]", '{"text": "lone \\ud800"}']
    path.write_bytes("\n".join(lines).encode() + b'\n{"text": "bad \xff utf8"}\n{"text": "good 2"}\n')
    items = read_all(str(path))
    assert [item.text for item in items if not isinstance(item, BadInput)] == ["good 1", "good 2"]
    bad = [(item.line, item.reason) for item in items if isinstance(item, BadInput)]
    assert bad == [(2, "invalid_json"), (3, "missing_text"), (4, "not_an_object"), (5, "invalid_unicode"), (6, "invalid_utf8")]
    assert all(item.raw for item in items if isinstance(item, BadInput))


def test_truncated_compressed_files_keep_the_records_before_the_cut(tmp_path, files):
    records = [{"text": f"document {index} " + "x" * 200} for index in range(2000)]
    for suffix, write in ((".jsonl.zst", files.zst), (".jsonl.gz", files.gz)):
        path = write(tmp_path / f"cut{suffix}", records)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        items = read_all(str(path))
        *docs, last = items
        assert isinstance(last, BadInput) and last.reason == "corrupt_file", suffix
        assert last.line == len(docs) + 1 and 0 < len(docs) < 2000
        assert [doc.text for doc in docs] == [record["text"] for record in records[: len(docs)]]


def test_empty_file_and_oversized_record(tmp_path, files):
    (tmp_path / "empty.jsonl.zst").write_bytes(b"")
    files.jsonl(tmp_path / "big.jsonl", [{"text": "x" * 5000}, {"text": "small"}])
    items = read_all(str(tmp_path), ReaderConfig(max_record_bytes=1000))
    bad = sorted((item.file, item.line, item.reason) for item in items if isinstance(item, BadInput))
    assert bad == [("big.jsonl", 1, "record_too_large"), ("empty.jsonl.zst", 0, "empty_file")]
    assert [doc.text for doc in items if not isinstance(doc, BadInput)] == ["small"]


def test_hugging_face_source_on_local_files(tmp_path, files, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    data = files.jsonl(tmp_path / "hf" / "data.jsonl", [{"text": "from datasets", "id": "d1"}, {"text": "second"}])
    config = ReaderConfig()
    config.hf.data_files = str(data)
    docs = read_all("hf:json", config)
    assert [(doc.id, doc.text) for doc in docs] == [("d1", "from datasets"), ("hf:json:2", "second")]
