"""Input files to documents: C4 (``*.json.gz``), Pile (``*.jsonl.zst``), plain ``*.jsonl`` /
``*.jsonl.gz``, parquet, and Hugging Face ``datasets`` sources (``hf:<hub name or path>``).

Nothing is dropped silently: a record that cannot be read becomes a ``BadInput`` naming the
file, the line and the reason, and reading goes on with the next line (or, when the
compressed stream itself is broken, with the next file).
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from data_pipeline.curate.config import ReaderConfig
from data_pipeline.io.lines import STREAM_ERRORS, iter_lines
from data_pipeline.document import Document

JSON_LINES_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".json")
SUPPORTED_SUFFIXES = JSON_LINES_SUFFIXES + (".parquet",)
HF_PREFIX = "hf:"


@dataclass(frozen=True)
class InputSource:
    """One unit of work: an input file (or a Hugging Face dataset), in the global order."""

    index: int
    path: str
    name: str  # stable name used in derived ids: the path relative to the inputs' common folder


@dataclass(frozen=True)
class BadInput:
    file: str
    line: int  # 1-based; 0 for a problem with the whole file
    reason: str
    detail: str
    raw: str | None = None  # the unreadable line itself, so nothing is lost

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}: {self.detail}"


def resolve_inputs(spec: str | Iterable[str]) -> list[InputSource]:
    """The sources named by ``input=``: files, folders (searched recursively), globs and
    ``hf:`` datasets. Files come sorted by path; that order makes dedup deterministic."""
    entries = [spec] if isinstance(spec, str) else list(spec)
    files: set[str] = set()
    datasets: list[str] = []
    for entry in entries:
        entry = str(entry)
        if entry.startswith(HF_PREFIX):
            datasets.append(entry)
        else:
            files.update(_files_of(entry))
    paths = sorted(files)
    root = os.path.commonpath([os.path.dirname(p) for p in paths]) if paths else ""
    sources = [InputSource(i, p, os.path.relpath(p, root)) for i, p in enumerate(paths)]
    sources += [InputSource(len(paths) + i, d, d) for i, d in enumerate(datasets)]
    if not sources:
        raise ValueError(f"input={spec!r} names no input (expected files ending in {', '.join(SUPPORTED_SUFFIXES)})")
    return sources


def _files_of(entry: str) -> list[str]:
    path = Path(entry).expanduser()
    if path.is_dir():
        found = [os.path.abspath(p) for p in path.rglob("*") if p.is_file() and p.name.endswith(SUPPORTED_SUFFIXES)]
    elif path.is_file():
        if not path.name.endswith(SUPPORTED_SUFFIXES):
            raise ValueError(f"input file {entry} is not one of {', '.join(SUPPORTED_SUFFIXES)}")
        found = [os.path.abspath(path)]
    else:
        matches = glob.glob(str(path), recursive=True)
        found = [os.path.abspath(p) for p in matches if os.path.isfile(p) and p.endswith(SUPPORTED_SUFFIXES)]
    if not found:
        raise ValueError(f"input entry {entry!r} matches no file ending in {', '.join(SUPPORTED_SUFFIXES)}")
    return found


def read_source(source: InputSource, config: ReaderConfig) -> Iterator[Document | BadInput]:
    """Every document of one source, and a BadInput for each record or file problem."""
    if source.path.startswith(HF_PREFIX):
        records = _hf_records(source.path[len(HF_PREFIX):], config)
    elif source.path.endswith(".parquet"):
        records = _parquet_records(source.path)
    else:
        records = _json_lines_records(source, config)
    parse = _RecordParser(source, config)
    last_line = 0
    try:
        for last_line, record in records:
            yield record if isinstance(record, BadInput) else parse(last_line, record)
    except STREAM_ERRORS + (ValueError,) as error:  # pyarrow and datasets raise ValueError subclasses
        detail = f"{type(error).__name__}: {error}; the records before this line were read"
        yield BadInput(source.name, last_line + 1, "corrupt_file", detail)
        return
    if last_line == 0:
        yield BadInput(source.name, 0, "empty_file", "the file holds no record")


class _RecordParser:
    """A decoded JSON object (or a parquet / datasets row) to a Document."""

    def __init__(self, source: InputSource, config: ReaderConfig) -> None:
        self.source = source
        self.text_key = config.text_key
        self.id_paths = [key.split(".") for key in config.id_keys]

    def __call__(self, line: int, record: Any) -> Document | BadInput:
        if not isinstance(record, dict):
            return self._bad(line, "not_an_object", f"a JSON {type(record).__name__}, not an object", record)
        text = record.get(self.text_key)
        if not isinstance(text, str):
            detail = f"no string field {self.text_key!r} (set reader.text_key to the field holding the text)"
            return self._bad(line, "missing_text", detail, record)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:  # a lone surrogate escaped in the JSON: not writable as UTF-8
            return self._bad(line, "invalid_unicode", str(error), record)
        return Document(self._id_of(record, line), text, self._meta_of(record), self.source.name, line)

    def _bad(self, line: int, reason: str, detail: str, record: Any) -> BadInput:
        return BadInput(self.source.name, line, reason, detail, json.dumps(record, ensure_ascii=True, default=str))

    def _id_of(self, record: dict, line: int) -> str:
        for path in self.id_paths:
            value: Any = record
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if value is not None:
                return str(value)
        return f"{self.source.name}:{line}"

    def _meta_of(self, record: dict) -> dict[str, Any]:
        meta = {key: value for key, value in record.items() if key not in (self.text_key, "id", "meta")}
        inner = record.get("meta")
        if isinstance(inner, dict):
            return {**inner, **meta}
        if inner is not None:
            meta["meta"] = inner
        return meta


def _json_lines_records(source: InputSource, config: ReaderConfig) -> Iterator[tuple[int, Any]]:
    for line, raw in enumerate(iter_lines(source.path), start=1):
        if not raw.strip():
            continue
        if len(raw) > config.max_record_bytes:
            detail = f"{len(raw):,} bytes > reader.max_record_bytes={config.max_record_bytes:,}"
            yield line, BadInput(source.name, line, "record_too_large", detail, raw.decode("utf-8", "backslashreplace"))
            continue
        try:
            yield line, json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            yield line, BadInput(source.name, line, "invalid_utf8", str(error), raw.decode("utf-8", "backslashreplace"))
        except json.JSONDecodeError as error:
            yield line, BadInput(source.name, line, "invalid_json", str(error), raw.decode("utf-8", "backslashreplace"))


def _parquet_records(path: str) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as parquet

    row = 0
    for batch in parquet.ParquetFile(path).iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            row += 1
            yield row, record


def _hf_records(name: str, config: ReaderConfig) -> Iterator[tuple[int, Any]]:
    import datasets

    hf = config.hf
    stream = datasets.load_dataset(name, name=hf.name, split=hf.split, data_files=hf.data_files, streaming=True)
    yield from enumerate(stream, start=1)
