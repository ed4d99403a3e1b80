"""Framework overhead and data-loader speed of `pretrain.train`, measured side by side.

    python benchmarks/bench_train.py [--steps 30] [--model tiny] [--seq-len 256] [--batch 8]

1. Training throughput of the Trainer (DeepSpeed engine, objective, loss, metrics; logging
   and checkpoints out of the way) against a bare torch loop on the same model, batch and
   optimizer, in one process. Target: at least 0.9 of the bare loop's tokens/s.
2. Samples/s of the data loader alone (order, blending, memmap windows, objective) against
   the samples/s training consumes. Target: at least 50x.
The token data is generated (a Markov chain over 40 ids), so nothing needs downloading.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "pretrain"))
from bare_loop import BareLoop  # noqa: E402
from conftest import write_corpus  # noqa: E402  (the tests' generated corpus)

from pretrain.config import load_train_config  # noqa: E402
from pretrain.parallel.process_groups import init_distributed  # noqa: E402
from pretrain.training.trainer import Trainer  # noqa: E402


def bare_loop_tokens_per_s(trainer: Trainer, steps: int) -> float:
    """The same model, optimizer and batches on the same device and precision, with nothing
    but torch around them."""
    bare = BareLoop.of_gpt(trainer.model_cfg, trainer.cfg, trainer.process.device, trainer.precision)
    plan = trainer.plan
    start = time.perf_counter()
    for step in range(steps):
        positions = plan.positions(step * plan.global_batch, 0, 0)  # the same samples, read the same way
        bare.step(trainer.make_batch(trainer.stream.sample(positions).windows, positions))
    bare.synchronize()
    return steps * plan.global_batch * trainer.cfg.train.seq_len / (time.perf_counter() - start)


def loader_samples_per_s(trainer: Trainer, batches: int) -> float:
    start = time.perf_counter()
    for index in range(batches):
        positions = trainer.plan.positions(index * trainer.plan.global_batch, 0, 0)
        trainer.make_batch(trainer.stream.sample(positions).windows, positions)
    return batches * trainer.plan.micro_batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternate framework and bare runs this many times")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    process = init_distributed()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = write_corpus(Path(tmp) / "tokens", train_shards=4, docs_per_shard=400)
        overrides = [
            f"data.path={corpus}",
            f"model={args.model}",
            f"train.seq_len={args.seq_len}",
            f"model.max_seq_len={args.seq_len}",
            f"train.micro_batch_size={args.batch}",
            f"train.global_batch_size={args.batch}",
            f"train.max_steps={args.steps}",
            f"train.log_every={args.steps}",
            "train.eval_every=0",
            "train.save_every=0",
            "logging.progress_bar=false",
            "optim.warmup_steps=0",
            "resume=never",
        ]
        Trainer(load_train_config([*overrides, f"run_dir={tmp}/warm-up"]), process).fit()
        framework, bare = [], []
        for round_index in range(args.rounds):
            trainer = Trainer(load_train_config([*overrides, f"run_dir={tmp}/run{round_index}"]), process)
            framework.append(trainer.fit()[-1]["tokens_per_s"])
            bare.append(bare_loop_tokens_per_s(trainer, args.steps))
        loader = loader_samples_per_s(trainer, 200)
    consumed = np.median(framework) / args.seq_len
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"device: {device}; model {args.model}, seq {args.seq_len}, batch {args.batch}, "
        f"{args.steps} steps x {args.rounds} rounds"
    )
    print(f"pretrain.train : {np.median(framework):10.0f} tokens/s (median; rounds {[round(x) for x in framework]})")
    print(f"bare torch loop: {np.median(bare):10.0f} tokens/s (median; rounds {[round(x) for x in bare]})")
    # Each round runs the two back to back: their ratio cancels the machine's drift between rounds.
    ratios = [f / b for f, b in zip(framework, bare)]
    print(
        f"ratio          : {np.median(ratios):10.3f}  "
        f"(median of the rounds' ratios {[round(r, 3) for r in ratios]}; target >= 0.95)"
    )
    print(
        f"data loader    : {loader:10.0f} samples/s = {loader / consumed:.0f}x what training consumes (target >= 50x)"
    )


if __name__ == "__main__":
    main()
