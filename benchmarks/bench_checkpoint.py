"""Checkpoint save and load: wall time and peak host memory each rank adds, per layout.

    python benchmarks/bench_checkpoint.py --layout single|zero1|pp2xtp2 [--model gpt-350m] [--async-save]
    # "before": the same script against another checkout's code
    PYTHONPATH=/path/to/old/checkout python benchmarks/bench_checkpoint.py --layout single

Trains one step (so the optimizer has state), then times ``Trainer.save()`` and, in a fresh
Trainer of the same layout, the resume. With ``--async-save`` (``train.async_save``),
``save_s`` is the stall (the time training waits) and ``written_s`` the time until the
checkpoint is complete after that; memory is the peak resident set a rank adds during
each (Linux: /proc/self/clear_refs, VmHWM), with large blocks returned to the system on
free (MALLOC_MMAP_THRESHOLD_) so that it counts allocations, not what malloc keeps. Prints
one JSON line per rank. CPU, gloo; uses the tests' generated corpus.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAYOUTS = {"single": (1, ["parallel=single"]), "zero1": (2, ["parallel=zero1"]), "pp2xtp2": (4, ["parallel=3d"])}


def _status_bytes(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def _measured(action):  # type: ignore[no-untyped-def]
    """(seconds, peak bytes added) of ``action()``."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_bytes("VmRSS")
    start = time.perf_counter()
    action()
    return time.perf_counter() - start, _status_bytes("VmHWM") - before


def worker(run_dir: str, overrides: list[str]) -> None:
    import torch.distributed as dist

    from pretrain.config import load_train_config
    from pretrain.parallel.process_groups import init_distributed
    from pretrain.training.trainer import Trainer

    process = init_distributed()
    trainer = Trainer(load_train_config([*overrides, f"run_dir={run_dir}"]), process)
    trainer.train_step()
    save_s, save_added = _measured(trainer.save)
    # 0 unless the save runs in the background (older checkouts, measured for "before", save in step)
    written_s, _ = _measured(getattr(trainer, "wait_for_save", lambda: None))
    dist.barrier()
    del trainer
    fresh = Trainer(load_train_config([*overrides, f"run_dir={run_dir}-load"]), process)
    path = sorted((Path(run_dir) / "checkpoints").glob("step-*"))[-1]
    load_s, load_added = _measured(lambda: fresh._resume(path))
    print(
        json.dumps(
            {
                "rank": process.rank,
                "save_s": round(save_s, 2),
                "written_s": round(written_s, 2),
                "save_added_gb": round(save_added / 2**30, 3),
                "load_s": round(load_s, 2),
                "load_added_gb": round(load_added / 2**30, 3),
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layout", choices=LAYOUTS, required=True)
    parser.add_argument("--model", default="gpt-350m")
    parser.add_argument("--async-save", action="store_true", help="train.async_save=true: measure the stall")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "pretrain"))
    from conftest import write_corpus  # the tests' generated corpus
    from torchrun_workers import bench_overrides, torchrun_command, worker_environment

    work = Path(tempfile.mkdtemp(prefix="bench-checkpoint-"))
    corpus = write_corpus(work / "tokens")
    nproc, layout = LAYOUTS[args.layout]
    overrides = bench_overrides(corpus, args.model, layout, nproc) + (
        ["train.async_save=true"] if args.async_save else []
    )
    env = worker_environment()
    command = torchrun_command(nproc, __file__, work / "run", overrides)
    try:
        subprocess.run(command, env=env, check=True)
    finally:
        shutil.rmtree(work)  # gigabytes of checkpoints


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3:])
    else:
        main()
