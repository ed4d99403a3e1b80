"""The longest sequence one device trains on, with activation checkpointing off and on: the
framework's Trainer (micro-batch 1, two steps, so the optimizer state is there too) at
sequence lengths doubling from ``start`` until the device runs out of memory or ``cap`` is
reached, in one row process per setting; beside it, the planner's longest that fits.

A sequence that does not fit ends the search: what an out-of-memory error leaves in the
caching allocator would make a longer one fail anyway."""

from __future__ import annotations

import dataclasses
import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from gpu.rows import Setup, Shape, train_overrides

LONGEST = "longest"


@dataclass(frozen=True)
class LongSetup:
    model: str
    recompute: bool
    start: int  # the first sequence length tried
    cap: int  # the last: the search stops there even if it still fits

    @property
    def label(self) -> str:
        return f"{self.model} recompute={'on' if self.recompute else 'off'}"

    def lengths(self) -> Iterator[int]:
        seq = self.start
        while seq <= self.cap:
            yield seq
            seq *= 2


def long_overrides(setup: LongSetup, shape: Shape, seq: int, corpus: Path, run_dir: Path) -> list[str]:
    """The throughput rows' config at ``seq`` tokens, micro-batch 1, two steps."""
    at = dataclasses.replace(shape, seq_len=seq, steps=1, micro_batch={setup.model: 1})
    return [
        *train_overrides(Setup(setup.model), at, corpus, run_dir),
        f"train.activation_checkpointing={str(setup.recompute).lower()}",
    ]


def corpus_documents(cap: int) -> int:
    """Documents per shard of the tests' generated corpus (~110 tokens each, two shards) for
    two windows of ``cap`` tokens, with room to spare."""
    return max(400, 3 * cap // 100)


def out_of_memory(err: BaseException) -> bool:
    return "out of memory" in str(err).lower()


def search(spec: dict, corpus: Path, run_dir: Path) -> dict:
    """In the row's process: ``{"longest", "peak_gib", "failed_at"}``, the longest length
    that trained, its peak memory and the first length that did not (None: the cap fits)."""
    import torch

    from pretrain.config import load_train_config
    from pretrain.parallel.process_groups import init_distributed
    from pretrain.training.metrics import memory_gb
    from pretrain.training.trainer import Trainer

    shape = Shape(**spec.pop("shape"))
    setup = LongSetup(**spec)
    process = init_distributed()
    longest, peak, failed_at = None, None, None
    for seq in setup.lengths():
        cfg = load_train_config(long_overrides(setup, shape, seq, corpus, run_dir / str(seq)))
        if process.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(process.device)
        try:
            Trainer(cfg, process).fit()
        except Exception as err:
            if not out_of_memory(err):
                raise
            failed_at = seq
            break
        finally:
            gc.collect()
            if process.device.type == "cuda":
                torch.cuda.empty_cache()
        longest, peak = seq, memory_gb(process.device)
    if longest is None:
        raise RuntimeError(f"{setup.label}: even {setup.start} tokens ran out of memory")
    return {"longest": longest, "peak_gib": peak, "failed_at": failed_at}


def planned_longest(setup: LongSetup, shape: Shape, corpus: Path, cluster) -> Optional[int]:  # type: ignore[no-untyped-def]
    """The longest of the searched lengths the planner says fits the device (None: none)."""
    from pretrain.config import load_train_config
    from pretrain.planning.search import Planner

    planner, longest = Planner(cluster), None
    for seq in setup.lengths():
        cfg = load_train_config(long_overrides(setup, shape, seq, corpus, Path("unused")))
        if not planner.plan(cfg, world_size=1).memory.fits:
            break
        longest = seq
    return longest


COLUMNS = ("model", "recompute", "longest seq", "peak GiB", "out of memory at", "planner's longest", "note")


def markdown(records: list[dict]) -> str:
    def cell(value: object) -> str:
        return "-" if value is None else str(value)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for r in records:
        peak = None if r.get("peak_gib") is None else f"{r['peak_gib']:.2f}"
        failed = r.get("failed_at") or (f"none up to {r['cap']}" if r.get("longest") else None)
        values = (
            r["model"],
            "on" if r["recompute"] else "off",
            r.get("longest"),
            peak,
            failed,
            r.get("planned"),
            r.get("note", ""),
        )
        lines.append("| " + " | ".join(cell(v) for v in values) + " |")
    return "\n".join(lines)
