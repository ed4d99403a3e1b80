"""Starts several ``init_from`` runs in one torchrun launch and writes, per run, the first
step's loss and what each rank read of the checkpoint, for test_hf_import.py.

    torchrun --nproc_per_node=N tests/pretrain/hf_parallel_worker.py RUNS.json OUT.json

RUNS.json: {"name": [override, ...], ...}.
"""
from __future__ import annotations

import json
import sys

import torch.distributed as dist

from pretrain.config import load_train_config
from pretrain.distributed import init_distributed
from pretrain.parallel.pipeline import canonical_parameters
from pretrain.trainer import Trainer


def main(runs_file: str, out_file: str) -> None:
    runs = json.loads(open(runs_file).read())
    process = init_distributed()
    results: dict[str, dict] = {}
    for name, overrides in runs.items():
        trainer = Trainer(load_train_config(overrides), process)
        params = canonical_parameters(trainer.engine.module)
        # ZeRO-3 has partitioned the parameters since; ds_numel is what the rank held before.
        local = sum(getattr(param, "ds_numel", param.numel()) for param in params.values())
        read = {"tensors": trainer.imported.tensors, "elements": trainer.imported.elements,
                "local_tensors": len(params), "local_elements": local}
        reads: list = [None] * dist.get_world_size()
        dist.all_gather_object(reads, read)
        results[name] = {"loss": trainer.fit()[0]["loss"], "reads": reads}
        dist.barrier()
    if process.is_main:
        with open(out_file, "w") as out:
            json.dump(results, out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
