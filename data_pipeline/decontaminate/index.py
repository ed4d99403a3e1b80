"""The n-gram index of the evaluation tasks: built once per curation run into its work dir,
memory-mapped by every work unit that looks documents up in it.

On disk (``<output_dir>/_work/decontaminate/``):
  hashes.npy   every item gram's 64-bit hash (ngrams.py), sorted: 8 bytes per gram
  items.npy    the item of each hash (uint32, aligned with hashes.npy): 4 bytes per gram
  lines.npy    each item's line in its task file (uint32, by item)
  index.json   the settings, the gram lengths present, and each task's name, file and first item
A unit maps the arrays (the operating system pages in what lookups touch and shares it between
the processes of one machine), so a unit's memory does not grow with the task set
(BENCHMARKS.md: 100k items).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_pipeline.decontaminate.config import DecontaminateConfig
from data_pipeline.decontaminate.ngrams import gram_hashes, item_gram_hashes
from data_pipeline.decontaminate.task_items import read_task_items


def task_digests(paths: list[str]) -> list[str]:
    """Each task file's SHA-256: part of the run's identity, so that a resumed run never
    mixes units decontaminated against other task files."""
    digests = []
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"decontaminate.tasks: {path}: no such task file")
        digests.append(hashlib.sha256(Path(path).read_bytes()).hexdigest())
    return digests


def build_index(config: DecontaminateConfig, directory: Path) -> dict:
    """Write the index of ``config.tasks`` to ``directory``, published whole by one rename,
    and return its index.json; an index already there is kept (the run's claim ties it to
    the same task files)."""
    if directory.exists():
        return json.loads((directory / "index.json").read_text())
    hashes, items, lines, tasks, lengths = [], [], [], [], {config.ngram}
    for path in config.tasks:
        task_items = read_task_items(path)
        task = {
            "name": Path(path).stem,
            "path": str(path),
            "first_item": len(lines),
            "items": len(task_items),
            "too_short": 0,
        }
        for item in task_items:
            length, grams = item_gram_hashes(item.text, config.ngram, config.min_words)
            task["too_short"] += length == 0
            lengths.add(length or config.ngram)
            hashes.append(grams)
            items.append(np.full(len(grams), len(lines), dtype=np.uint32))
            lines.append(item.line)
        tasks.append(task)
    all_hashes = np.concatenate([np.empty(0, dtype=np.uint64), *hashes])
    order = np.argsort(all_hashes, kind="stable")
    scratch = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    np.save(scratch / "hashes.npy", all_hashes[order])
    np.save(scratch / "items.npy", np.concatenate([np.empty(0, dtype=np.uint32), *items])[order])
    np.save(scratch / "lines.npy", np.asarray(lines, dtype=np.uint32))
    meta = {
        "ngram": config.ngram,
        "min_words": config.min_words,
        "lengths": sorted(lengths),
        "grams": len(all_hashes),
        "tasks": tasks,
    }
    (scratch / "index.json").write_text(json.dumps(meta, indent=1))
    try:
        scratch.rename(directory)
    except OSError:  # another task of this run published it first
        shutil.rmtree(scratch, ignore_errors=True)
    return meta


@dataclass(frozen=True)
class Match:
    """Task grams found in a text: where (word positions, each with its gram length) and whose."""

    starts: np.ndarray  # first word of each matched gram
    lengths: np.ndarray  # its length in words
    items: np.ndarray  # the item it belongs to (a gram shared by several items: once per item)


class TaskIndex:
    def __init__(self, directory: Path) -> None:
        self.meta = json.loads((directory / "index.json").read_text())
        self.hashes = np.load(directory / "hashes.npy", mmap_mode="r")
        self.items = np.load(directory / "items.npy", mmap_mode="r")
        self.lines = np.load(directory / "lines.npy", mmap_mode="r")
        self.lengths: list[int] = self.meta["lengths"]
        self.task_names = [task["name"] for task in self.meta["tasks"]]
        self._first_items = np.asarray([task["first_item"] for task in self.meta["tasks"]])

    def task_of(self, items: np.ndarray) -> np.ndarray:
        return np.searchsorted(self._first_items, items, side="right") - 1

    def find(self, hashed_words: np.ndarray) -> Match:
        """Every task gram among the text's grams (hashed_words: ngrams.word_hashes)."""
        starts, lengths, items = [], [], []
        for length, grams in gram_hashes(hashed_words, self.lengths).items():
            if not len(grams) or not len(self.hashes):
                continue
            # Keys in sorted order: numpy narrows each search from the previous one and reads the
            # memory-mapped hashes front to back (faster than keys in text order, measured).
            order = np.argsort(grams)
            left = np.empty(len(grams), dtype=np.int64)
            left[order] = np.searchsorted(self.hashes, grams[order])
            hit = np.asarray(self.hashes[np.minimum(left, len(self.hashes) - 1)]) == grams
            for position in np.flatnonzero(hit).tolist():
                right = np.searchsorted(self.hashes, grams[position], side="right")
                found = np.asarray(self.items[left[position] : right])
                starts.append(np.full(len(found), position))
                lengths.append(np.full(len(found), length))
                items.append(found)
        if not items:
            empty = np.empty(0, dtype=np.int64)
            return Match(empty, empty, empty)
        return Match(np.concatenate(starts), np.concatenate(lengths), np.concatenate(items).astype(np.int64))
