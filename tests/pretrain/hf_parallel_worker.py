"""Starts several ``init_from`` runs in one torchrun launch (parallel_worker.py's loop) and
writes, per run, the first step's loss and what each rank read of the checkpoint, for
test_hf_import.py.

    torchrun --nproc_per_node=N tests/pretrain/hf_parallel_worker.py RUNS.json OUT.json
"""
from __future__ import annotations

import sys

import torch.distributed as dist

from parallel_worker import main  # this script's directory is on sys.path
from pretrain.parallel.pipeline import canonical_parameters
from pretrain.trainer import Trainer


def first_loss_and_reads(trainer: Trainer) -> dict:
    params = canonical_parameters(trainer.engine.module)
    # ZeRO-3 has partitioned the parameters since; ds_numel is what the rank held before.
    local = sum(getattr(param, "ds_numel", param.numel()) for param in params.values())
    read = {"tensors": trainer.imported.tensors, "elements": trainer.imported.elements,
            "local_tensors": len(params), "local_elements": local}
    reads: list = [None] * dist.get_world_size()
    dist.all_gather_object(reads, read)
    return {"loss": trainer.fit()[0]["loss"], "reads": reads}


if __name__ == "__main__":
    main(*sys.argv[1:3], result_of=first_loss_and_reads)
