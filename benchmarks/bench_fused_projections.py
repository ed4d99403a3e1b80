"""Forward + backward time of the model with q|k|v and gate|up as one GEMM each (as trained)
against the same model with each projection its own GEMM, alternated in one process so
that both see the same machine.

    python benchmarks/bench_fused_projections.py [--model tiny] [--seq-len 256] [--batch 8] [--rounds 15]
        [model.X=Y ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import torch
import torch.nn.functional as F

import pretrain.model.gpt
from pretrain.config import load_train_config
from pretrain.model.gpt import GPT


def separate_linears(x: torch.Tensor, linears: tuple[torch.nn.Module, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(linear(x) for linear in linears)


def seconds_per_pass(model: GPT, tokens: torch.Tensor, passes: int) -> float:
    start = time.perf_counter()
    for _ in range(passes):
        logits = model(tokens[:, :-1])
        F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    return (time.perf_counter() - start) / passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--passes", type=int, default=5, help="forward + backward passes per round and variant")
    parser.add_argument("overrides", nargs="*", help="more model settings, e.g. model.d_model=256")
    args = parser.parse_args()
    overrides = [
        "data.path=unused",
        f"model={args.model}",
        f"model.max_seq_len={args.seq_len}",
        "model.vocab_size=128",
        *args.overrides,
    ]
    cfg = load_train_config(overrides).model
    model = GPT(cfg)
    tokens = torch.randint(
        0, cfg.vocab_size, (args.batch, args.seq_len + 1), generator=torch.Generator().manual_seed(0)
    )
    times: dict[str, list[float]] = {"fused": [], "separate": []}
    seconds_per_pass(model, tokens, 2)  # warm-up
    for _ in range(args.rounds):
        times["fused"].append(seconds_per_pass(model, tokens, args.passes))
        with mock.patch.object(pretrain.model.gpt, "fused_linear", separate_linears):
            times["separate"].append(seconds_per_pass(model, tokens, args.passes))
    ratios = [s / f for f, s in zip(times["fused"], times["separate"])]
    print(
        f"model {args.model} {' '.join(args.overrides)}, seq {args.seq_len}, batch {args.batch}, "
        f"{torch.get_num_threads()} threads, {args.rounds} rounds"
    )
    for name, values in times.items():
        print(f"{name:9}: {statistics.median(values) * 1e3:8.2f} ms per forward + backward (median)")
    print(f"speed-up  : {statistics.median(ratios):.3f}x (median of the rounds' separate / fused)")


if __name__ == "__main__":
    main()
