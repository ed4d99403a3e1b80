"""Starts several ``init_from`` runs in one torchrun launch (parallel_worker.py's loop) and
writes, per run, the first step's loss and what each rank read of the checkpoint, for
test_hf_import.py.

    torchrun --nproc_per_node=N tests/pretrain/workers/hf_parallel_worker.py RUNS.json OUT.json
"""

from __future__ import annotations

import sys

import torch.distributed as dist
from parallel_worker import main  # this script's directory is on sys.path

from pretrain.config import load_train_config
from pretrain.model.init import partition_range
from pretrain.parallel.pipeline import canonical_parameters
from pretrain.training.trainer import Trainer


def held_range(param) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    return partition_range(param) if hasattr(param, "ds_tensor") else (0, param.numel())


def first_loss_and_reads(name: str, overrides: list[str], process) -> dict:  # type: ignore[no-untyped-def]
    trainer = Trainer(load_train_config(overrides), process)
    params = canonical_parameters(trainer.engine.module)
    # Under ZeRO-3 a rank holds (and reads) only its partition of each parameter.
    local = sum(max(0, stop - start) for start, stop in map(held_range, params.values()))
    read = {
        "tensors": trainer.imported.tensors,
        "elements": trainer.imported.elements,
        "local_tensors": len(params),
        "local_elements": local,
    }
    reads: list = [None] * dist.get_world_size()
    dist.all_gather_object(reads, read)
    return {"loss": trainer.fit()[0]["loss"], "reads": reads}


if __name__ == "__main__":
    main(*sys.argv[1:3], result_of=first_loss_and_reads)
