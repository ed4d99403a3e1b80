"""A plan for people (a table, the recommended layout's breakdown and overrides) and for
programs (one JSON object per layout)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from pretrain.planning.search import LayoutPlan

GB = 1e9


def _gb(value: float) -> float:
    return round(value / GB, 6)


def plan_record(plan: LayoutPlan) -> dict[str, Any]:
    """One layout as plain data: the fields of ``output=plan.jsonl``."""
    rank = plan.memory.fullest
    return {
        "tp": plan.layout.tp,
        "pp": plan.layout.pp,
        "dp": plan.layout.dp,
        "cp": plan.layout.cp,
        "zero_stage": plan.config.parallel.zero_stage,
        "micro_batch_size": plan.config.train.micro_batch_size,
        "activation_checkpointing": plan.config.train.activation_checkpointing,
        "precision": plan.precision.value,
        "memory_gb": {
            "weights": _gb(rank.weights),
            "gradients": _gb(rank.gradients),
            "optimizer": _gb(rank.optimizer),
            "activations": _gb(rank.activations),
            "activations_without_recompute": _gb(rank.activations_stored),
            "activations_with_recompute": _gb(rank.activations_recomputed),
            "buffers": _gb(rank.buffers),
            "total": _gb(rank.total),
            "usable": _gb(plan.memory.usable_bytes),
        },
        "fits": plan.memory.fits,
        "step_s": round(plan.speed.step_s, 6),
        "tokens_per_s": round(plan.speed.tokens_per_s, 1),
        "mfu": round(plan.speed.mfu, 4),
        "bubble_fraction": round(plan.speed.bubble_fraction, 4),
        "overrides": plan.overrides(),
    }


def write_jsonl(plans: Iterable[LayoutPlan], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as out:
        for plan in plans:
            out.write(json.dumps(plan_record(plan)) + "\n")


COLUMNS = (
    "#",
    "tp",
    "pp",
    "dp",
    "cp",
    "zero",
    "micro",
    "recompute",
    "weights",
    "grads",
    "optim",
    "activ",
    "buffers",
    "total GB",
    "fits",
    "step s",
    "tokens/s",
    "MFU",
)


def format_table(plans: list[LayoutPlan], first: int = 1) -> str:
    rows = [COLUMNS]
    for index, plan in enumerate(plans, start=first):
        r = plan_record(plan)
        m = r["memory_gb"]
        rows.append(
            (
                str(index),
                str(r["tp"]),
                str(r["pp"]),
                str(r["dp"]),
                str(r["cp"]),
                str(r["zero_stage"]),
                str(r["micro_batch_size"]),
                "yes" if r["activation_checkpointing"] else "no",
                f"{m['weights']:.2f}",
                f"{m['gradients']:.2f}",
                f"{m['optimizer']:.2f}",
                f"{m['activations']:.2f}",
                f"{m['buffers']:.2f}",
                f"{m['total']:.2f}",
                "yes" if r["fits"] else "NO",
                f"{r['step_s']:.3g}",
                f"{r['tokens_per_s']:.4g}",
                f"{r['mfu']:.1%}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows)


def format_breakdown(plan: LayoutPlan) -> str:
    """Memory of the fullest rank and where the step's time goes."""
    rank, speed = plan.memory.fullest, plan.speed
    layout = plan.layout
    lines = [
        f"layout: tp={layout.tp} pp={layout.pp} cp={layout.cp} dp={layout.dp} (world size {layout.world_size}), "
        f"ZeRO {plan.config.parallel.zero_stage}, micro-batch {plan.config.train.micro_batch_size}, "
        f"activation checkpointing {'on' if rank.recompute else 'off'}, {plan.precision.value}",
        f"memory of the fullest rank (GB): weights {_gb(rank.weights):.4g}, gradients {_gb(rank.gradients):.4g}, "
        f"optimizer {_gb(rank.optimizer):.4g}, activations {_gb(rank.activations):.4g} "
        f"(without recompute {_gb(rank.activations_stored):.4g}, with {_gb(rank.activations_recomputed):.4g}), "
        f"communication buffers {_gb(rank.buffers):.4g}; "
        f"total {_gb(rank.total):.4g} of {_gb(plan.memory.usable_bytes):.4g} "
        f"usable ({_gb(plan.memory.device_bytes):.4g} less a {plan.memory.margin:.0%} margin): "
        f"{'fits' if plan.memory.fits else 'DOES NOT FIT'}",
        f"step {speed.step_s:.4g} s: matmuls {speed.compute_s:.4g} s (pipeline bubble {speed.bubble_fraction:.1%}), "
        f"tensor parallel {speed.tensor_parallel_s:.4g} s, context parallel {speed.context_parallel_s:.4g} s, "
        f"data parallel {speed.data_parallel_s:.4g} s, "
        f"optimizer {speed.optimizer_s:.4g} s; {speed.tokens_per_s:.4g} tokens/s, MFU {speed.mfu:.1%}",
    ]
    return "\n".join(lines)
