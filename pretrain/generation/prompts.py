"""Prompts (or, for chat, conversations) from the command line or a file, completions to a JSONL file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from data_pipeline.formats.jsonl import read_jsonl
from data_pipeline.tokenizer.chat_template import USER, Message, record_messages


def read_prompts_file(path: str | Path) -> list[str]:
    """``.jsonl``: the ``prompt`` of each record (prompts may span lines); otherwise one
    prompt per non-empty line."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"prompts_file={path}: no such file")
    if str(path).endswith(".jsonl"):
        prompts = []
        for number, record in read_jsonl(path):
            if not isinstance(record.get("prompt"), str):
                raise ValueError(f'{path}:{number}: a record needs a "prompt" string')
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


def conversation_of(record: dict, where: str) -> list[Message]:
    """A record's ``messages``, or its ``prompt`` as one user message; an error naming ``where`` otherwise."""
    messages = record_messages(record, answer_key=None)
    if isinstance(messages, str):
        raise ValueError(f"{where}: {messages}")
    return messages


def gather_conversations(prompt: Optional[str], prompts_file: Optional[str]) -> list[list[Message]]:
    """chat=true: ``prompt`` as one user message, and a file's conversations: in a .jsonl file
    {"messages": [{"role", "content"}, ...]} (or {"prompt"}) per line, else one user message per line."""
    conversations = [[{"role": USER, "content": prompt}]] if prompt is not None else []
    if prompts_file and str(prompts_file).endswith(".jsonl"):
        if not Path(prompts_file).is_file():
            raise FileNotFoundError(f"prompts_file={prompts_file}: no such file")
        conversations += [
            conversation_of(record, f"{prompts_file}:{number}") for number, record in read_jsonl(prompts_file)
        ]
    elif prompts_file:
        conversations += [[{"role": USER, "content": line}] for line in read_prompts_file(prompts_file)]
    if not conversations:
        raise ValueError('nothing to answer: give prompt="..." or prompts_file=<file>')
    return conversations


def write_chat_completions(
    path: str | Path, conversations: Sequence[list[Message]], completions: Sequence[str]
) -> None:
    """Each conversation with the assistant's new turn appended, as {"messages": [...]} lines."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as stream:
        for messages, completion in zip(conversations, completions):
            turns = [*messages, {"role": "assistant", "content": completion}]
            stream.write(json.dumps({"messages": turns}, ensure_ascii=False) + "\n")
