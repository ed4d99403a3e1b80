"""Splitting the work: which input files this task owns, worker processes on this machine,
and waiting for the other tasks between stages."""
from __future__ import annotations

import multiprocessing
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, TypeVar

from tqdm import tqdm

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class Task:
    index: int
    count: int

    def owns(self, items: Sequence[Item]) -> list[Item]:
        """Every count-th item from index: balanced, and the same for every run of this task."""
        return list(items[self.index :: self.count])


def resolve_task(index: int | None, count: int | None, environ: Mapping[str, str] = os.environ) -> Task:
    """task_index/num_tasks as configured, else from a Slurm array or torchrun, else 0 of 1."""
    if index is None and count is None:
        if "SLURM_ARRAY_TASK_ID" in environ:
            # array indices may start anywhere (--array=1-8): count from the first
            first = int(environ.get("SLURM_ARRAY_TASK_MIN", 0))
            index, count = int(environ["SLURM_ARRAY_TASK_ID"]) - first, int(environ["SLURM_ARRAY_TASK_COUNT"])
        elif "RANK" in environ and "WORLD_SIZE" in environ:
            index, count = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        else:
            index, count = 0, 1
    if index is None or count is None:
        raise ValueError(f"task_index={index} num_tasks={count}: set both or neither")
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"task_index={index} num_tasks={count}: need 0 <= task_index < num_tasks")
    return Task(index, count)


def run_jobs(
    function: Callable[[Item], Result], items: Sequence[Item], workers: int, progress: bool, description: str
) -> list[Result]:
    """function over items in `workers` processes (in this one for workers=1), with a progress
    bar; results in the order of items."""
    results: dict[int, Result] = {}
    with tqdm(total=len(items), desc=description, unit="file", disable=not progress or not items) as bar, ExitStack() as stack:
        indexed_call = _IndexedCall(function)
        if workers == 1 or len(items) <= 1:
            outcomes: Iterable[tuple[int, Result]] = map(indexed_call, enumerate(items))
        else:
            # spawn, not fork: forking a process that runs threads (tqdm's monitor) can deadlock
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(min(workers, len(items))))
            outcomes = pool.imap_unordered(indexed_call, enumerate(items))
        for index, result in outcomes:
            results[index] = result
            bar.update()
    return [results[i] for i in range(len(items))]


class _IndexedCall:
    """Picklable wrapper that keeps each result's position (imap_unordered loses it)."""

    def __init__(self, function: Callable) -> None:
        self.function = function

    def __call__(self, indexed_item: tuple[int, Item]) -> tuple[int, Result]:
        index, item = indexed_item
        return index, self.function(item)


def wait_for(paths: Sequence[Path], timeout_s: float, what: str, poll_s: float = 2.0) -> None:
    """Block until every path exists (markers written by other tasks)."""
    deadline = time.monotonic() + timeout_s
    while missing := [path for path in paths if not path.exists()]:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"waited {timeout_s:.0f} s for {what}; still missing {len(missing)} markers, e.g. {missing[0]} "
                "(did a task fail? rerun it: finished work is not redone; or raise wait_timeout_s)"
            )
        time.sleep(poll_s)
