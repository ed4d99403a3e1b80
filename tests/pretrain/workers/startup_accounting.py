"""One rank of gpt-13b under tp=8 × ZeRO-3 (dp 2): built on the meta device with the real
tensor-parallel layers, in a process group of 16 that torch fakes (no communication), and
accounted as ZeRO-3 would partition it. Prints JSON for test_startup.py.

    python tests/pretrain/workers/startup_accounting.py RANK
"""

from __future__ import annotations

import json
import math
import resource
import sys
from dataclasses import replace

import torch
import torch.distributed as dist
from torch.testing._internal.distributed.fake_pg import FakeStore

from pretrain.config import load_train_config
from pretrain.model.gpt import GPT
from pretrain.parallel.layout import ParallelLayout, build_grid
from pretrain.parallel.tensor import TensorParallelLayers

TP, DP = 8, 2


def main(rank: int) -> None:
    import deepspeed

    from pretrain.parallel.process_groups import _skip_shared_memory_op_build

    _skip_shared_memory_op_build()
    dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=TP * DP)
    deepspeed.init_distributed(dist_backend="fake", verbose=False)  # adopts the group
    grid = build_grid(ParallelLayout(tp=TP, pp=1, dp=DP))
    model_cfg = replace(load_train_config(["model=gpt-13b"]).model, vocab_size=50257)
    with torch.device("meta"):
        whole = GPT(model_cfg)
        local = GPT(model_cfg, TensorParallelLayers(grid.get_slice_parallel_group()))
    params = list(local.parameters())
    print(
        json.dumps(
            {
                "all_meta": all(p.is_meta for p in params),
                "whole_numel": sum(p.numel() for p in whole.parameters()),
                "tp_numel": sum(p.numel() for p in params),
                # ZeRO-3 keeps ceil(numel / dp) of each of this rank's tensor-parallel slices, in bf16.
                "zero3_bytes": sum(2 * math.ceil(p.numel() / DP) for p in params),
                "replicated_numel": sum(p.numel() for p in params if getattr(p, "tp_split_dim", None) is None),
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )


if __name__ == "__main__":
    main(int(sys.argv[1]))
