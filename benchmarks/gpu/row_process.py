"""One row of benchmarks/gpu.sh in a process of its own, so that whatever a row leaves behind
(device memory, compiled graphs, a crash) cannot touch the next one.

    python benchmarks/gpu/row_process.py SPEC_JSON CORPUS RUN_DIR

Its last output line is ``RESULT {json}``: tokens/s and peak memory (GiB: the device's
allocations on a GPU, the process's resident set on CPU), the longest sequence that fits
(runner ``longest``: benchmarks/gpu/longest.py), or the error in one line.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable

BENCHMARKS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCHMARKS))  # bare_loop, and gpu.* below

import numpy as np  # noqa: E402
import torch  # noqa: E402

from data_pipeline.formats.special_tokens import SpecialTokens  # noqa: E402
from gpu.longest import LONGEST, search  # noqa: E402
from gpu.report import one_line  # noqa: E402
from gpu.rows import BARE, HF, OURS, Setup, Shape, train_overrides  # noqa: E402
from pretrain.config import TrainConfig, load_train_config  # noqa: E402
from pretrain.data.loader import TrainingStream, open_sources  # noqa: E402
from pretrain.data.sources import data_sources, tokenizer_dir  # noqa: E402
from pretrain.objectives import Batch, build_objective  # noqa: E402
from pretrain.training.batches import BatchMaker  # noqa: E402
from pretrain.training.metrics import memory_gb  # noqa: E402

RESULT = "RESULT "


def run_ours(cfg: TrainConfig) -> float:
    """``pretrain.train``'s own loop: two log windows, the warm-up (compilation included) and
    the timed steps; the second window's tokens/s (the loop waits for the device at its end)."""
    from pretrain.parallel.process_groups import init_distributed
    from pretrain.training.trainer import Trainer

    return Trainer(cfg, init_distributed()).fit()[-1]["tokens_per_s"]


def sample_batches(cfg: TrainConfig, special: SpecialTokens, device: torch.device, count: int) -> list[Batch]:
    """The micro-batches the trainer would train on first (same sampling, same objective)."""
    paths, weights = data_sources(cfg.data)
    objective = build_objective(cfg.objective, special, cfg.train.seq_len, cfg.train.seed)
    sources = open_sources(paths, cfg.data.train_split, objective.window_length(), special.tokenizer_hash or None)
    stream, make = TrainingStream(sources, weights, cfg.train.seed), BatchMaker(objective, device)
    micro = cfg.train.micro_batch_size
    positions = [np.arange(index * micro, (index + 1) * micro) for index in range(count)]
    return [make(stream.sample(p).windows, p) for p in positions]


def timed_tokens_per_s(
    step: Callable[[Batch], None], batches: list[Batch], steps: int, synchronize: Callable[[], None]
) -> float:
    """Warm-up steps (compilation), then the timed ones between two waits for the device."""
    for index in range(steps):
        step(batches[index % len(batches)])
    synchronize()
    start = time.perf_counter()
    for index in range(steps):
        step(batches[index % len(batches)])
    synchronize()
    tokens = batches[0].input_ids.numel()
    return steps * tokens / (time.perf_counter() - start)


def run_bare(cfg: TrainConfig, runner: str, steps: int) -> float:
    from bare_loop import BareLoop

    from pretrain.parallel.deepspeed_config import resolve_precision

    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    precision = resolve_precision(cfg.train.precision, device)
    special = SpecialTokens.load(tokenizer_dir(cfg.data, data_sources(cfg.data)[0]))
    if runner == BARE:
        loop = BareLoop.of_gpt(cfg.model, cfg, device, precision)
    else:
        from gpu.hf_llama import llama_loop

        loop = llama_loop(cfg.model, special, cfg, device, precision)
    return timed_tokens_per_s(loop.step, sample_batches(cfg, special, device, 2), steps, loop.synchronize)


def run_row(spec: dict, corpus: Path, run_dir: Path) -> dict:
    runner = spec.pop("runner")
    if runner == LONGEST:
        return search(spec, corpus, run_dir)
    shape = Shape(**spec.pop("shape"))
    setup = Setup(**spec)
    cfg = load_train_config(train_overrides(setup, shape, corpus, run_dir))
    if runner == OURS:
        tokens_per_s = run_ours(cfg)
    elif runner in (BARE, HF):
        tokens_per_s = run_bare(cfg, runner, shape.steps)
    else:
        raise ValueError(f"runner {runner!r} has no process of its own")
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    return {"tokens_per_s": tokens_per_s, "peak_gib": memory_gb(device)}


def main(argv: list[str]) -> int:
    try:
        result = run_row(json.loads(argv[1]), Path(argv[2]), Path(argv[3]))
    except Exception as err:  # the parent prints it as the row's one line
        print(RESULT + json.dumps({"error": one_line(err)}), flush=True)
        return 1
    print(RESULT + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
