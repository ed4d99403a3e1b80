"""The torchrun plumbing shared by the multi-rank memory benchmarks (bench_checkpoint,
bench_lora_memory): a tiny-sequence run of a real model on the tests' corpus, one process per
rank, each rank measuring itself."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# A launcher's variables would make the workers join the wrong group.
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def bench_overrides(corpus: Path, model: str, layout: list[str], nproc: int) -> list[str]:
    """One micro-batch of 32 tokens per rank: the model's state dominates the memory."""
    return [
        f"data.path={corpus}",
        f"model={model}",
        *layout,
        "train.seq_len=32",
        "train.micro_batch_size=1",
        f"train.global_batch_size={nproc}",
        "train.save_every=0",
        "train.eval_every=0",
        "logging.progress_bar=false",
        "optim.grad_clip=0",
    ]


def worker_environment() -> dict[str, str]:
    """One thread per rank, and large allocations returned to the system at once (so RSS
    follows what a rank holds)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": str(2**16)}
    return {key: value for key, value in env.items() if key not in LAUNCH_VARIABLES}


def torchrun_command(nproc: int, script: str, run_dir: Path, overrides: list[str]) -> list[str]:
    """``script --worker RUN_DIR OVERRIDES`` on ``nproc`` ranks of one node."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        script,
        "--worker",
        str(run_dir),
        *overrides,
    ]
