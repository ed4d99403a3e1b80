"""Optimizer state and memory per rank: LoRA against full fine-tuning, per layout.

    python benchmarks/bench_lora_memory.py --layout single|zero1|zero3 [--model gpt-350m] [--layers N]

Runs one training step of the full model, then (in a launch of its own, so that resident
memory is its own) one of the same model with LoRA (``lora.rank`` 16 on q, k, v, o, gate,
up, down, alpha 32), and prints one JSON line per rank and mode: trained parameters this rank
holds, bytes of the optimizer state it holds (every tensor in ``optimizer.state``: the
moments, or their ZeRO partitions), bytes of gradients held after the step's backward, and
the resident memory after the step.
CPU, gloo, fp32; uses the tests' generated corpus.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

LAYOUTS = {"single": (1, ["parallel=single"]), "zero1": (2, ["parallel=zero1"]), "zero3": (2, ["parallel=zero3"])}
LORA = ["lora.rank=16", "lora.alpha=32", "lora.targets=[q,k,v,o,gate,up,down]"]


def _rss_gb() -> float:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 2**20


def _tensor_bytes(tensors) -> int:  # type: ignore[no-untyped-def]
    return sum(t.numel() * t.element_size() for t in tensors if hasattr(t, "numel") and t.dim() > 0)


def worker(run_dir: str, overrides: list[str]) -> None:
    import torch.distributed as dist

    from pretrain.config import load_train_config
    from pretrain.parallel.process_groups import init_distributed
    from pretrain.training.trainer import Trainer

    process = init_distributed()
    mode = "lora" if any(o.startswith("lora.") for o in overrides) else "full"
    trainer = Trainer(load_train_config([*overrides, f"run_dir={run_dir}-{mode}"]), process)
    trainer.train_step()
    held = [
        p.ds_tensor if hasattr(p, "ds_tensor") else p for p in trainer.engine.module.parameters() if p.requires_grad
    ]
    state = [value for values in trainer.optimizer.state.values() for value in values.values()]
    report = {
        "mode": mode,
        "rank": process.rank,
        "model_parameters": trainer.num_parameters,
        "trained_parameters_on_rank": sum(t.numel() for t in held),
        "optimizer_state_gb": round(_tensor_bytes(state) / 2**30, 4),
        "rss_gb": round(_rss_gb(), 2),
    }
    print(json.dumps(report), flush=True)
    dist.barrier()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layout", choices=LAYOUTS, required=True)
    parser.add_argument("--model", default="gpt-350m")
    parser.add_argument("--layers", type=int, default=None, help="model.n_layers override")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "pretrain"))
    from conftest import write_corpus  # the tests' generated corpus
    from torchrun_workers import bench_overrides, torchrun_command, worker_environment

    work = Path(tempfile.mkdtemp(prefix="bench-lora-"))
    corpus = write_corpus(work / "tokens")
    nproc, layout = LAYOUTS[args.layout]
    overrides = [*bench_overrides(corpus, args.model, layout, nproc), "train.max_steps=1"]
    if args.layers:
        overrides.append(f"model.n_layers={args.layers}")
    env = worker_environment()
    command = torchrun_command(nproc, __file__, work / "run", overrides)
    try:
        for extra in ([], LORA):
            subprocess.run([*command, *extra], env=env, check=True)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3:])
    else:
        main()
