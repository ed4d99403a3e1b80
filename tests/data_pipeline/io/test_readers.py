"""Input formats, ids and metadata, and every kind of bad input reported with file and line."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_pipeline.io.config import ReaderConfig
from data_pipeline.io.readers import BadInput, read_unit, resolve_inputs
from data_pipeline.io.units import split_into_units


def read_all(spec, config: ReaderConfig | None = None, unit_size_mb: float = 256) -> list:
    config = config or ReaderConfig()
    return [
        item
        for unit in split_into_units(resolve_inputs(spec), unit_size_mb, config.hf)
        for item in read_unit(unit, config)
    ]


def summary(items: list) -> list[tuple]:
    """What a reader yields, comparable across unit sizes."""
    return [
        (item.file, item.line, item.reason)
        if isinstance(item, BadInput)
        else (item.id, item.text, item.source, item.line)
        for item in items
    ]


def test_byte_ranges_and_row_groups_read_what_the_whole_file_holds(tmp_path, files):
    lines = [{"text": f"doc {i} " + "é" * (i % 7) * 30, **({"id": f"d{i}"} if i % 3 else {})} for i in range(60)]
    raw = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines).encode()
    raw = raw.replace(b"\n", b"\n\n", 3) + b"\n{broken\n" + json.dumps({"text": "last, no newline"}).encode()
    (tmp_path / "big.jsonl").write_bytes(raw)
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(50)]}), tmp_path / "rows.parquet", row_group_size=7)
    whole = read_all(str(tmp_path))
    for unit_size_mb in (1e-3, 2.5e-4, 1e-6):  # ~1 KB, 250 B and 1 B units: lines cut everywhere
        units = split_into_units(resolve_inputs(str(tmp_path)), unit_size_mb, ReaderConfig().hf)
        assert len(units) > 3
        assert summary(read_all(str(tmp_path), unit_size_mb=unit_size_mb)) == summary(whole)
    assert ("big.jsonl", 64, "invalid_json") in summary(whole) and len(whole) == 60 + 1 + 1 + 50
    assert summary(whole)[-1] == ("rows.parquet:50", "row 49", "rows.parquet", 50)


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
    assert bad == [
        (2, "invalid_json"),
        (3, "missing_text"),
        (4, "not_an_object"),
        (5, "invalid_unicode"),
        (6, "invalid_utf8"),
    ]
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
    files.jsonl(tmp_path / "hf" / "a.jsonl", [{"text": "from datasets", "id": "d1"}, {"text": "second"}])
    files.jsonl(tmp_path / "hf" / "b.jsonl", [{"text": "third"}])
    config = ReaderConfig()
    config.hf.data_files = str(tmp_path / "hf" / "*.jsonl")
    units = split_into_units(resolve_inputs("hf:json"), 256, config.hf)
    assert [unit.input_name for unit in units] == ["hf:json/a.jsonl", "hf:json/b.jsonl"]  # a unit per data file
    docs = read_all("hf:json", config)
    assert [(doc.id, doc.text) for doc in docs] == [
        ("d1", "from datasets"),
        ("hf:json/a.jsonl:2", "second"),
        ("hf:json/b.jsonl:1", "third"),
    ]
