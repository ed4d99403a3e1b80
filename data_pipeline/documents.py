"""Reading documents from JSONL shards for tokenizer training and tokenization.

A shard is ``*.jsonl``, ``*.jsonl.gz`` or ``*.jsonl.zst`` with one JSON object a line:
``{"id": str, "text": str, "meta": {...}}``. Lines are split on ``\\n`` only, reading
bytes: ``str.splitlines`` would also split inside text on U+2028 and friends, and decoding
each line ourselves lets an invalid UTF-8 line be reported with its line number.
"""
from __future__ import annotations

import glob
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from data_pipeline.io.lines import STREAM_ERRORS, iter_lines

SHARD_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Document:
    # None when the record has no "id"; the split then hashes the text instead.
    id: str | None
    text: str
    num_bytes: int


@dataclass(frozen=True)
class BadRecord:
    path: Path
    line_number: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line_number}: {self.reason}"


class BadRecordError(ValueError):
    """Raised for the first bad record under ``strict=true``."""


class ShardReadError(OSError):
    """A shard that cannot be read to its end (corrupt or truncated compression)."""


@dataclass
class BadRecordLog:
    """Counts bad records and keeps the first few to report; ``strict`` fails on the first."""

    strict: bool = False
    max_kept: int = 20
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, record: BadRecord) -> None:
        if self.strict:
            raise BadRecordError(f"{record} (strict=true stops here; set strict=false to skip bad records)")
        self.count += 1
        if len(self.examples) < self.max_kept:
            self.examples.append(str(record))

    def merge(self, other: "BadRecordLog") -> None:
        self.count += other.count
        self.examples.extend(other.examples[: self.max_kept - len(self.examples)])

    def report(self) -> None:
        if self.count:
            shown = "\n  ".join(self.examples)
            more = f"\n  ... and {self.count - len(self.examples)} more" if self.count > len(self.examples) else ""
            log.warning("skipped %d bad records (strict=true fails on them instead):\n  %s%s", self.count, shown, more)


def find_input_shards(pattern: str | Path) -> list[Path]:
    """The shards named by a directory (the JSONL shards at its top level) or a glob, sorted.

    Not recursive: a curation output_dir keeps its removed documents in ``removed/``, which
    must not be read as training text. A glob such as ``data/**/*.jsonl.zst`` recurses."""
    path = Path(pattern).expanduser()
    if path.is_dir():
        candidates = [p for p in path.iterdir() if p.is_file()]
    else:
        candidates = [Path(p) for p in glob.glob(str(path), recursive=True)]
    shards = sorted(p for p in candidates if p.name.endswith(SHARD_SUFFIXES))
    if not shards:
        raise FileNotFoundError(
            f"input={pattern}: no {'/'.join(SHARD_SUFFIXES)} files found; point input to a directory "
            "of shards or a glob such as 'data/clean/*.jsonl.zst'"
        )
    return shards


def parse_record(line: bytes) -> Document | str:
    """A document, or the reason the line is not one."""
    try:
        record = json.loads(line)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError alike
        return f"not a JSON line ({err})"
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    text = record.get("text")
    if not isinstance(text, str):
        return 'missing "text" field' if text is None else f'"text" is {type(text).__name__}, not a string'
    try:
        num_bytes = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return '"text" holds a lone surrogate escape, which is not valid Unicode'
    doc_id = record.get("id")
    return Document(id=None if doc_id is None else str(doc_id), text=text, num_bytes=num_bytes)


def read_documents(path: Path, bad_records: BadRecordLog) -> Iterator[Document]:
    """The documents of one shard; bad lines go to ``bad_records`` with their line number."""
    line_number = 0
    try:
        for line_number, line in enumerate(iter_lines(str(path)), start=1):
            if not line.strip():
                continue
            parsed = parse_record(line)
            if isinstance(parsed, Document):
                yield parsed
            else:
                bad_records.add(BadRecord(path, line_number, parsed))
    except STREAM_ERRORS as err:
        raise ShardReadError(
            f"{path}: unreadable after line {line_number} ({err}); the file is truncated or corrupt, "
            "re-create it or move it out of the input"
        ) from err
