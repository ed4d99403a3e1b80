"""Reading JSONL input files: prompts and evaluation tasks (pretrain), and the task files
that decontamination indexes (data_pipeline/decontaminate)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) of each non-blank line; a bad line is an error naming it."""
    # Line by line from the file: str.splitlines() would also split inside texts at U+2028.
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path}:{number}: not valid JSON ({err.msg}); the file holds one JSON object per line"
                ) from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            yield number, record
