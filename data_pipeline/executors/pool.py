"""Worker processes on this machine that never wait on a dead worker.

``multiprocessing.Pool`` replaces a worker that the OOM killer (or anyone) SIGKILLs and waits
forever for the lost task's result. Here each worker owns a pipe and is given one item at a
time; the parent waits on the pipes *and* the processes' sentinels, so a death is seen at
once and reported with the item it was working on."""

from __future__ import annotations

import multiprocessing
import pickle
import signal
import traceback
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Callable, Iterator, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class UnitFailedError(RuntimeError):
    """A work unit raised, or its worker process died; names the unit."""


def death_cause(exitcode: int | None) -> str:
    """Why a process ended, in words a user can act on."""
    if exitcode == -signal.SIGKILL:
        return (
            "killed by SIGKILL: most likely the out-of-memory killer (see `dmesg` or the job's memory "
            "limit); use fewer workers, a smaller unit_size_mb or more memory per task"
        )
    if exitcode is not None and exitcode < 0:
        return f"killed by signal {signal.Signals(-exitcode).name}"
    return f"exited with code {exitcode} without reporting a result"


def run_unordered(
    function: Callable[[Item], Result], items: Sequence[Item], workers: int, describe: Callable[[Item], str] = str
) -> Iterator[tuple[int, Result]]:
    """(index, function(item)) for every item, in completion order. With one worker (or one
    item) in this process; else in `workers` spawned processes. The first failure stops the
    other workers and raises: the item's own exception (noted with `describe(item)`), or
    UnitFailedError naming the item when its worker died. Results already yielded (and
    whatever their units published) stay."""
    if workers <= 1 or len(items) <= 1:
        for index, item in enumerate(items):
            yield index, function(item)
        return
    # spawn, not fork: forking a process that runs threads (tqdm's monitor) can deadlock
    context = multiprocessing.get_context("spawn")
    pool = [_Worker(context, function) for _ in range(min(workers, len(items)))]
    todo = deque(enumerate(items))
    try:
        busy = [worker for worker in pool if worker.take(todo)]
        while busy:
            ready = set(wait([worker.connection for worker in busy] + [worker.process.sentinel for worker in busy]))
            for worker in list(busy):
                if worker.connection not in ready and worker.process.sentinel not in ready:
                    continue
                index = worker.index
                outcome = worker.receive()
                if outcome is None:
                    raise UnitFailedError(
                        f"{describe(items[index])}: the worker process {death_cause(worker.process.exitcode)}"
                    )
                ok, payload = outcome
                if not ok:
                    _raise_remote(*payload, describe(items[index]))
                yield index, payload
                if not worker.take(todo):
                    busy.remove(worker)
    finally:
        for worker in pool:
            worker.stop()


def _raise_remote(error: Exception | None, report: str, unit: str) -> None:
    """The worker's exception, as if raised here (callers catch it by type), with the unit
    and the worker's traceback as a note."""
    if error is None:
        raise UnitFailedError(f"{unit} failed:\n{report}")
    if hasattr(error, "add_note"):  # Python 3.11+
        error.add_note(f"in {unit}; the worker's traceback:\n{report}")
    raise error


def _serve(connection: Connection, function: Callable) -> None:
    """A worker's loop: items in, (True, result) or (False, (error, traceback)) out, until None."""
    while (item := connection.recv()) is not None:
        try:
            connection.send((True, function(item)))
        except Exception as error:  # reported to the parent, which re-raises it naming the unit
            report = "".join(traceback.format_exception(error))
            try:
                pickle.loads(pickle.dumps(error))
            except Exception:  # an exception that cannot travel: its text does
                error = None
            connection.send((False, (error, report)))


class _Worker:
    def __init__(self, context, function: Callable) -> None:
        self.connection, child_end = context.Pipe()
        self.process = context.Process(target=_serve, args=(child_end, function), daemon=True)
        self.process.start()
        child_end.close()
        self.index = -1

    def take(self, todo: deque) -> bool:
        """Start on the next item; False when there is none left."""
        if not todo:
            return False
        self.index, item = todo.popleft()
        self.connection.send(item)
        return True

    def receive(self) -> tuple[bool, object] | None:
        """The outcome of the current item, or None if the process died without one."""
        try:
            if self.connection.poll():
                return self.connection.recv()
        except (EOFError, OSError):
            pass
        self.process.join(timeout=5)  # so that exitcode is set
        return None

    def stop(self) -> None:
        if self.process.is_alive():
            try:
                self.connection.send(None)
            except OSError:
                pass
            self.process.join(timeout=1)
        if self.process.is_alive():  # still busy on a unit: its partial output is never published
            self.process.terminate()
            self.process.join()
        self.connection.close()
