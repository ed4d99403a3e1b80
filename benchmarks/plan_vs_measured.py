"""The layout planner's predictions against real training runs: tokens/s (and on a GPU the
peak memory) of `pretrain.train` for a few models and layouts, next to what
`pretrain.plan` predicts for the same config on this machine's cluster config.

    python benchmarks/plan_vs_measured.py                 # CPU: tiny and small × single, zero1, tp2
    python benchmarks/plan_vs_measured.py --device gpu    # one GPU: gpt-350m and gpt-1.3b, bf16, seq 2048
    python benchmarks/plan_vs_measured.py --device gpu --dry-run --cluster h200   # predictions and commands only

Each case trains on a generated token corpus (nothing to download). On a GPU it runs
`pretrain.train` and reports the last log window's tokens/s (start-up left out) and the
peak memory. On the CPU, one process per core (OMP_NUM_THREADS=1), each rank times --steps
training steps after two warm-up steps by its own CPU time: tokens per step over the slowest
rank's CPU seconds per step is what an idle machine would do, even while other jobs share
this one. Target: within 30 % of the prediction (docs/plan.md, BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "pretrain"))
from conftest import write_corpus  # noqa: E402  (the tests' generated corpus)

from pretrain.config import load_train_config  # noqa: E402
from pretrain.planning.cluster import ClusterConfig  # noqa: E402
from pretrain.planning.preflight import CLUSTER_DIR, load_cluster, this_machine  # noqa: E402
from pretrain.planning.search import Planner  # noqa: E402

# The quickstart's model: small enough for CPU, big enough that matmuls dominate.
SMALL = ["model=tiny", "model.n_layers=4", "model.d_model=128", "model.n_heads=4", "model.n_kv_heads=2"]
PRESETS = {"single": 1, "zero1": 2, "tp2": 2}


@dataclass(frozen=True)
class Case:
    name: str
    processes: int
    overrides: tuple[str, ...]


def cpu_cases() -> list[Case]:
    shape = [
        "train.seq_len=256",
        "model.max_seq_len=256",
        "train.micro_batch_size=8",
        "train.global_batch_size=16",
        "model.vocab_size=256",
    ]  # the generated corpus's
    models = {"tiny": ["model=tiny"], "small": SMALL}
    return [
        Case(f"{model} {preset}", procs, (*overrides, f"parallel={preset}", *shape))
        for model, overrides in models.items()
        for preset, procs in PRESETS.items()
    ]


def gpu_cases() -> list[Case]:
    shape = ["train.seq_len=2048", "model.vocab_size=32000", "train.precision=bf16"]
    return [
        Case("gpt-350m", 1, ("model=gpt-350m", "train.micro_batch_size=8", "train.global_batch_size=16", *shape)),
        Case("gpt-1.3b", 1, ("model=gpt-1.3b", "train.micro_batch_size=4", "train.global_batch_size=8", *shape)),
    ]


COMMON = [
    "train.eval_every=0",
    "train.save_every=0",
    "logging.progress_bar=false",
    "optim.warmup_steps=0",
    "resume=never",
]


def cluster_for(case: Case, name: str | None) -> ClusterConfig:
    """The named cluster config sized to the case, or this machine's."""
    if name is None:
        return this_machine(case.processes)
    return dataclasses.replace(load_cluster(CLUSTER_DIR / f"{name}.yaml"), nodes=1, gpus_per_node=case.processes)


def predict(case: Case, corpus: Path, cluster: ClusterConfig) -> tuple[float, float]:
    """(tokens/s, peak GB) the planner predicts for the case."""
    cfg = load_train_config([f"data.path={corpus}", *case.overrides, *COMMON])
    plan = Planner(cluster).plan(cfg, case.processes)
    return plan.speed.tokens_per_s, plan.memory.fullest.total / 1e9


def command(case: Case, corpus: Path, run_dir: Path, steps: int) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={case.processes}"]
    if case.processes == 1:
        launcher = [sys.executable]
    log_every = max(1, steps // 3)
    return [
        *launcher,
        "-m",
        "pretrain.train",
        f"data.path={corpus}",
        f"run_dir={run_dir}",
        *case.overrides,
        *COMMON,
        f"train.max_steps={steps}",
        f"train.log_every={log_every}",
    ]


def _launch(command: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command[:6])} ... failed:\n{done.stderr[-3000:]}")


def measure_gpu(case: Case, corpus: Path, run_dir: Path, steps: int) -> tuple[float, float]:
    """(tokens/s of the last log window, peak memory GB) of a real run."""
    _launch(command(case, corpus, run_dir, steps))
    last = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    return last["tokens_per_s"], last["memory_gb"] * 2**30 / 1e9


def measure_cpu(case: Case, corpus: Path, run_dir: Path, steps: int) -> float:
    """Tokens per CPU-second of the slowest rank, over ``steps`` steps after a warm-up."""
    overrides = [f"data.path={corpus}", f"run_dir={run_dir}", *case.overrides, *COMMON]
    out = run_dir.parent / f"{run_dir.name}-cpu.json"
    _launch(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={case.processes}",
            __file__,
            "--worker",
            str(out),
            "--steps",
            str(steps),
            "--overrides",
            json.dumps(overrides),
        ]
    )
    cfg = load_train_config(overrides)
    return cfg.train.global_batch_size * cfg.train.seq_len / max(json.loads(out.read_text()))


def step_worker(overrides: list[str], out: Path, steps: int) -> None:
    """Inside torchrun: each rank's CPU seconds per training step, gathered on rank 0."""
    import torch.distributed as dist

    from pretrain.parallel.process_groups import init_distributed
    from pretrain.training.trainer import Trainer

    process = init_distributed()
    trainer = Trainer(load_train_config(overrides), process)
    for _ in range(2):
        trainer.train_step(with_grad_norm=False)
    start = time.process_time()
    for _ in range(steps):
        trainer.train_step(with_grad_norm=False)
    per_step: list = [None] * process.world_size
    dist.all_gather_object(per_step, (time.process_time() - start) / steps)
    if process.is_main:
        out.write_text(json.dumps(per_step))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--dry-run", action="store_true", help="print the predictions and the commands; run nothing")
    parser.add_argument("--cluster", help="predict for this configs/cluster/ entry (default: this machine's)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # a rank of measure_cpu's launch
    parser.add_argument("--overrides", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        step_worker(json.loads(args.overrides), args.worker, args.steps)
        return
    gpu = args.device == "gpu"
    cases = gpu_cases() if gpu else cpu_cases()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = write_corpus(Path(tmp) / "tokens", train_shards=4, docs_per_shard=400)
        print(
            "| case | processes | predicted tokens/s | measured tokens/s | measured / predicted "
            "| predicted GB | measured peak GB |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for index, case in enumerate(cases):
            tokens, gb = predict(case, corpus, cluster_for(case, args.cluster))
            if args.dry_run:
                print(f"| {case.name} | {case.processes} | {tokens:.0f} | - | - | {gb:.2f} | - |")
                print("    " + " ".join(command(case, corpus, Path(tmp) / f"run{index}", args.steps)))
                continue
            run_dir = Path(tmp) / f"run{index}"
            if gpu:
                measured, peak = measure_gpu(case, corpus, run_dir, args.steps)
            else:
                measured, peak = measure_cpu(case, corpus, run_dir, args.steps), float("nan")
            print(
                f"| {case.name} | {case.processes} | {tokens:.0f} | {measured:.0f} | {measured / tokens:.2f} "
                f"| {gb:.2f} | {peak:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
