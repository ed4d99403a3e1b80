"""GPU throughput of `pretrain.train` against a nanoGPT-style bare loop of the same model.

    benchmarks/gpu.sh                          # one H100/H200, at most 8 minutes
    python benchmarks/bench_gpu.py --dry-run   # CPU, tiny sizes: the script itself works

For gpt-125m, gpt-350m and gpt-1.3b (bf16, seq 2048, a 32k vocabulary): the framework with
compile off and on, objective=span and document masking (both compiled: FlexAttention), and
the bare loop (`benchmarks/bare_loop.py`, plain causal attention) with compile off and on.
Each run times the steps after its warm-up (compilation included there) and prints one row
of tokens/s, TFLOP/s per GPU and MFU; the last column is the framework over the bare loop
with the same compile setting. Rows past ``--budget-s`` are skipped, a row that fails (out of
memory, say) prints its error, and neither stops the table.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "pretrain"))
from conftest import write_corpus  # noqa: E402  (the tests' generated corpus)
from bare_loop import BareLoop  # noqa: E402

from pretrain.config import load_train_config  # noqa: E402
from pretrain.parallel.process_groups import ProcessInfo, init_distributed  # noqa: E402
from pretrain.trainer import Trainer  # noqa: E402

# Micro-batches (sequences of 2048) that fit one 80 GB GPU without activation checkpointing.
GPU_MICRO_BATCH = {"gpt-125m": 16, "gpt-350m": 16, "gpt-1.3b": 8}


@dataclass(frozen=True)
class Case:
    model: str
    runner: str  # "framework" or "bare"
    compile: bool
    objective: str = "clm"
    document_masking: bool = False

    @property
    def label(self) -> str:
        masking = "+docs" if self.document_masking else ""
        return f"{self.model:9} {self.runner:9} {self.objective + masking:9} {'on' if self.compile else 'off':7}"


@dataclass
class Measured:
    tokens_per_s: float
    tflops: float
    mfu: Optional[float]


def cases(models: list[str], compile_options: list[bool]) -> list[Case]:
    rows = []
    for model in models:
        for compiled in compile_options:
            rows += [Case(model, "bare", compiled), Case(model, "framework", compiled)]
        fast = compile_options[-1]  # FlexAttention is fast compiled only
        rows += [Case(model, "framework", fast, objective="span"), Case(model, "framework", fast, document_masking=True)]
    return rows


def overrides(case: Case, args: argparse.Namespace, corpus: Path, run_dir: Path) -> list[str]:
    micro = args.micro_batch or GPU_MICRO_BATCH.get(case.model, 4)
    return [
        f"data.path={corpus}", f"run_dir={run_dir}", f"model={case.model}", f"model.vocab_size={args.vocab}",
        f"train.seq_len={args.seq_len}", f"model.max_seq_len={args.seq_len}", f"train.precision={args.precision}",
        f"train.micro_batch_size={micro}", f"train.global_batch_size={micro}", f"train.compile={str(case.compile).lower()}",
        f"objective={case.objective}", f"objective.document_masking={str(case.document_masking).lower()}",
        # Two log windows: the warm-up (compilation included), then the timed steps.
        f"train.max_steps={2 * args.steps}", f"train.log_every={args.steps}",
        "train.eval_every=0", "train.save_every=0",
        "logging.progress_bar=false", "optim.warmup_steps=0", "resume=never",
    ]


def run_framework(trainer: Trainer) -> Measured:
    last = trainer.fit()[-1]
    return Measured(last["tokens_per_s"], last["tflops_per_device"], last["mfu"])


def run_bare(trainer: Trainer, args: argparse.Namespace) -> Measured:
    """The bare loop on the framework's batches (and so the same tokens per step)."""
    bare = BareLoop(trainer.model_cfg, trainer.cfg, trainer.process.device, trainer.precision)
    plan = trainer.plan
    batches = []
    for index in range(2):
        positions = plan.positions(index * plan.global_batch, 0, 0)
        batches.append(trainer.make_batch(trainer.stream.sample(positions).windows, positions))
    for step in range(args.steps):  # warm-up, as many steps as the framework's
        bare.step(batches[step % 2])
    bare.synchronize()
    start = time.perf_counter()
    for step in range(args.steps):
        bare.step(batches[step % 2])
    bare.synchronize()
    tokens_per_s = args.steps * plan.global_batch * trainer.cfg.train.seq_len / (time.perf_counter() - start)
    tflops = trainer.flops_per_token * tokens_per_s / 1e12
    return Measured(tokens_per_s, tflops, None if trainer.peak_tflops is None else tflops / trainer.peak_tflops)


def measure(case: Case, args: argparse.Namespace, corpus: Path, run_dir: Path, process: ProcessInfo) -> Measured:
    trainer = Trainer(load_train_config(overrides(case, args, corpus, run_dir)), process)
    try:
        return run_bare(trainer, args) if case.runner == "bare" else run_framework(trainer)
    finally:
        del trainer
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, model tiny, seq 64, fp32, compile off, 2 steps")
    parser.add_argument("--models", nargs="+", default=["gpt-125m", "gpt-350m", "gpt-1.3b"])
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--micro-batch", type=int, default=None, help="default: GPU_MICRO_BATCH per model")
    parser.add_argument("--steps", type=int, default=10, help="timed steps, after as many warm-up steps (compilation)")
    parser.add_argument("--budget-s", type=float, default=420, help="skip the rows that would start after this")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.models, args.seq_len, args.vocab, args.precision = ["tiny"], 64, 256, "fp32"
        args.micro_batch, args.steps = 2, 1
    return args


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    process = init_distributed()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    table = [
        f"device: {device}; seq {args.seq_len}, {args.precision}, vocab {args.vocab}; {args.steps} warm-up + {args.steps} timed steps",
        f"{'model':9} {'runner':9} {'objective':9} {'compile':7} {'tokens/s':>10} {'TFLOP/s':>8} {'MFU':>6} {'vs bare':>7}",
    ]
    started = time.perf_counter()
    bare_speed: dict[tuple[str, bool], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = write_corpus(Path(tmp) / "tokens", train_shards=2, docs_per_shard=400)
        for index, case in enumerate(cases(args.models, [False] if args.dry_run else [False, True])):
            if time.perf_counter() - started > args.budget_s:
                table.append(f"{case.label} skipped (past --budget-s {args.budget_s:.0f})")
                continue
            try:
                result = measure(case, args, corpus, Path(tmp) / f"run{index}", process)
            except (RuntimeError, ValueError) as err:  # out of memory, a compile failure: report, go on
                table.append(f"{case.label} failed: {str(err).splitlines()[0][:120]}")
                continue
            if case.runner == "bare":
                bare_speed[case.model, case.compile] = result.tokens_per_s
            baseline = bare_speed.get((case.model, case.compile))
            mfu = "-" if result.mfu is None else f"{100 * result.mfu:.1f}%"
            ratio = "-" if baseline is None else f"{result.tokens_per_s / baseline:.2f}"
            table.append(f"{case.label} {result.tokens_per_s:10.0f} {result.tflops:8.1f} {mfu:>6} {ratio:>7}")
            print(table[-1], flush=True)  # progress, between the runs' own log lines
    table.append(f"total {time.perf_counter() - started:.0f} s")
    print("\n" + "\n".join(table))


if __name__ == "__main__":
    main()
