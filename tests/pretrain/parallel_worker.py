"""Runs several training configurations in one torchrun launch (each launch costs seconds
of start-up) and writes each run's per-step losses as JSON, for test_parallel.py.

    torchrun --nproc_per_node=N tests/pretrain/parallel_worker.py RUNS.json OUT.json

RUNS.json: {"name": [override, ...], ...}; the runs go in order, so a later run may
resume from an earlier one's run_dir.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Callable

import torch.distributed as dist

from pretrain.config import load_train_config
from pretrain.distributed import init_distributed
from pretrain.trainer import Trainer


def losses(trainer: Trainer) -> list[float]:
    return [record["loss"] for record in trainer.fit()]


def main(runs_file: str, out_file: str, result_of: Callable[[Trainer], Any] = losses) -> None:
    """Each run's ``result_of(trainer)`` (collective: every rank calls it) into OUT.json."""
    runs = json.loads(open(runs_file).read())
    process = init_distributed()
    results: dict[str, Any] = {}
    for name, overrides in runs.items():
        # An error ends the whole launch (torchrun stops the other ranks); catching it here
        # would leave the ranks that did not fail waiting in the next run's collectives.
        results[name] = result_of(Trainer(load_train_config(overrides), process))
        dist.barrier()
    if process.is_main:
        with open(out_file, "w") as out:
            json.dump(results, out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
