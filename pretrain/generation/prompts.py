"""Prompts from the command line or a file, completions to a JSONL file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from data_pipeline.formats.jsonl import read_jsonl


def read_prompts_file(path: str | Path) -> list[str]:
    """``.jsonl``: the ``prompt`` of each record (prompts may span lines); otherwise one
    prompt per non-empty line."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"prompts_file={path}: no such file")
    if str(path).endswith(".jsonl"):
        prompts = []
        for number, record in read_jsonl(path):
            if not isinstance(record.get("prompt"), str):
                raise ValueError(f"{path}:{number}: a record needs a \"prompt\" string")
            prompts.append(record["prompt"])
        return prompts
    with open(path, encoding="utf-8") as stream:
        return [line.rstrip("\n") for line in stream if line.strip()]


def gather_prompts(prompt: Optional[str], prompts_file: Optional[str]) -> list[str]:
    prompts = ([prompt] if prompt is not None else []) + (read_prompts_file(prompts_file) if prompts_file else [])
    if not prompts:
        raise ValueError('nothing to complete: give prompt="..." or prompts_file=<file>')
    return prompts


def write_completions(path: str | Path, prompts: Sequence[str], completions: Sequence[str]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as stream:
        for prompt, completion in zip(prompts, completions):
            stream.write(json.dumps({"prompt": prompt, "completion": completion}, ensure_ascii=False) + "\n")
