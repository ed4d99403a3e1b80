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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from data_pipeline.document import Document
from data_pipeline.io.config import ReaderConfig
from data_pipeline.io.lines import STREAM_ERRORS, iter_line_range, iter_lines

if TYPE_CHECKING:  # units.py builds on InputSource below
    from data_pipeline.io.units import InputUnit

JSON_LINES_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".json")
SUPPORTED_SUFFIXES = JSON_LINES_SUFFIXES + (".parquet",)
HF_PREFIX = "hf:"


@dataclass(frozen=True)
class InputSource:
    """An input file (or a Hugging Face dataset), in the global order; io/units.py cuts it into work units."""

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


# bad records listed by file and line, per work unit (all are counted)
MAX_BAD_INPUT_EVENTS = 100


class BadInputError(ValueError):
    """A bad record under strict=true."""


class BadInputTally:
    """Counts bad records by reason and keeps the first ones with file and line."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.by_reason: Counter[str] = Counter()
        self.events: list[dict[str, Any]] = []

    def add(self, bad: BadInput) -> None:
        if self.strict:
            raise BadInputError(
                f"{bad} (strict=true stops at the first bad record; strict=false counts and skips them)"
            )
        self.by_reason[bad.reason] += 1
        if len(self.events) < MAX_BAD_INPUT_EVENTS:
            self.events.append({"file": bad.file, "line": bad.line, "reason": bad.reason, "detail": bad.detail})

    def absorb(self, stats: dict[str, Any]) -> None:
        """Add another tally's ``stats()`` (a work unit's, from another process)."""
        self.by_reason.update(stats["by_reason"])
        self.events.extend(stats["events"][: MAX_BAD_INPUT_EVENTS - len(self.events)])

    def stats(self) -> dict[str, Any]:
        return {"count": sum(self.by_reason.values()), "by_reason": dict(self.by_reason), "events": self.events}


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


# a curation output_dir holds report.json at its top level: never training text
CORPUS_FOLDER_SUFFIXES = tuple(suffix for suffix in SUPPORTED_SUFFIXES if suffix != ".json")


def resolve_corpus_inputs(spec: str) -> list[InputSource]:
    """The sources of a curated corpus: a folder gives its top-level shards only (a curation
    output_dir keeps the documents it removed in ``removed/`` and its work files in
    ``_work/``, never to be trained on); a file, a glob (``data/**/*.jsonl.zst`` recurses) or
    an ``hf:`` dataset as :func:`resolve_inputs` reads them."""
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        return resolve_inputs(spec)
    files = sorted(
        str(path.resolve())
        for path in folder.iterdir()
        if path.is_file() and path.name.endswith(CORPUS_FOLDER_SUFFIXES)
    )
    if not files:
        raise ValueError(
            f"input={spec}: no file ending in {', '.join(CORPUS_FOLDER_SUFFIXES)} at the folder's top level; "
            "point input to a folder of shards or a glob such as 'data/clean/*.jsonl.zst'"
        )
    return resolve_inputs(files)


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


def unit_records(unit: InputUnit, config: ReaderConfig) -> Iterator[tuple[int, Any]]:
    """(line, decoded record or BadInput) of one work unit, with a BadInput for each file problem."""
    source = unit.source
    if unit.data_file is not None:
        records = _hf_records(source.path[len(HF_PREFIX) :], unit.data_file, config)
    elif source.path.endswith(".parquet"):
        records = _parquet_records(source.path, unit.start, unit.stop)
    else:
        records = _json_lines_records(unit, config)
    last_line = 0
    try:
        for last_line, record in records:
            yield last_line, record
    except STREAM_ERRORS + (ValueError,) as error:  # pyarrow and datasets raise ValueError subclasses
        detail = f"{type(error).__name__}: {error}; the records before this line were read"
        yield last_line + 1, BadInput(unit.input_name, last_line + 1, "corrupt_file", detail)
        return
    if last_line == 0 and unit.is_first_of_source:
        yield 0, BadInput(unit.input_name, 0, "empty_file", "the file holds no record")


def read_unit(unit: InputUnit, config: ReaderConfig) -> Iterator[Document | BadInput]:
    """Every document of one work unit, and a BadInput for each record or file problem."""
    parse = _RecordParser(unit.input_name, config)
    for line, record in unit_records(unit, config):
        yield record if isinstance(record, BadInput) else parse(line, record)


def record_id(record: dict, id_paths: list[list[str]], input_name: str, line: int) -> str:
    """The first of the id keys a record has ("meta.id" looks inside "meta"), else file:line."""
    for path in id_paths:
        value: Any = record
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            return str(value)
    return f"{input_name}:{line}"


class _RecordParser:
    """A decoded JSON object (or a parquet / datasets row) to a Document."""

    def __init__(self, input_name: str, config: ReaderConfig) -> None:
        self.input_name = input_name
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
        return Document(self._id_of(record, line), text, self._meta_of(record), self.input_name, line)

    def _bad(self, line: int, reason: str, detail: str, record: Any) -> BadInput:
        return BadInput(self.input_name, line, reason, detail, json.dumps(record, ensure_ascii=True, default=str))

    def _id_of(self, record: dict, line: int) -> str:
        return record_id(record, self.id_paths, self.input_name, line)

    def _meta_of(self, record: dict) -> dict[str, Any]:
        meta = {key: value for key, value in record.items() if key not in (self.text_key, "id", "meta")}
        inner = record.get("meta")
        if isinstance(inner, dict):
            return {**inner, **meta}
        if inner is not None:
            meta["meta"] = inner
        return meta


def _json_lines_records(unit: InputUnit, config: ReaderConfig) -> Iterator[tuple[int, Any]]:
    name, path = unit.input_name, unit.source.path
    if unit.stop is None:
        lines_before, lines = 0, iter_lines(path)
    else:
        lines_before, lines = iter_line_range(path, unit.start, unit.stop)
    for line, raw in enumerate(lines, start=lines_before + 1):
        if not raw.strip():
            continue
        if len(raw) > config.max_record_bytes:
            detail = f"{len(raw):,} bytes > reader.max_record_bytes={config.max_record_bytes:,}"
            yield line, BadInput(name, line, "record_too_large", detail, raw.decode("utf-8", "backslashreplace"))
            continue
        try:
            yield line, json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            yield line, BadInput(name, line, "invalid_utf8", str(error), raw.decode("utf-8", "backslashreplace"))
        except json.JSONDecodeError as error:
            yield line, BadInput(name, line, "invalid_json", str(error), raw.decode("utf-8", "backslashreplace"))


def _parquet_records(path: str, first_group: int, stop_group: int | None) -> Iterator[tuple[int, Any]]:
    """Rows of row groups [first_group, stop_group), numbered as in the whole file."""
    import pyarrow.parquet as parquet

    file = parquet.ParquetFile(path)
    count = file.metadata.num_row_groups
    groups = list(range(first_group, count if stop_group is None else min(stop_group, count)))
    row = sum(file.metadata.row_group(group).num_rows for group in range(first_group))
    if not groups:
        return
    for batch in file.iter_batches(batch_size=1024, row_groups=groups):
        for record in batch.to_pylist():
            row += 1
            yield row, record


def _hf_records(name: str, data_file: str, config: ReaderConfig) -> Iterator[tuple[int, Any]]:
    import datasets

    hf = config.hf
    stream = datasets.load_dataset(
        name, name=hf.name, split=hf.split, data_files={hf.split: [data_file]}, streaming=True
    )
    yield from enumerate(stream, start=1)
