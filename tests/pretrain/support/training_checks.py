"""Helpers the CPU suite and the GPU lane (tests/gpu) share for whole training runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from pretrain.config import TrainConfig
from pretrain.parallel.pipeline import canonical_parameters
from pretrain.parallel.process_groups import ProcessInfo
from pretrain.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[3]
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def initial_parameters(trainer: Trainer) -> dict[str, Tensor]:
    """Every parameter of the model a Trainer built, whole (gathered from its ZeRO-3
    partitions), as fp32 CPU copies, under the names of the whole GPT."""
    import deepspeed

    params = canonical_parameters(trainer.engine.module)
    with deepspeed.zero.GatheredParameters(list(params.values()), enabled=trainer.cfg.parallel.zero_stage == 3):
        return {name: param.detach().float().cpu().clone() for name, param in params.items()}


def losses_of_a_cpu_run(overrides: list[str], run_dir: Path) -> list[float]:
    """The losses of ``python -m pretrain.train overrides`` in a process that sees no GPU
    (its own process: DeepSpeed picks its accelerator once per process)."""
    env = {key: value for key, value in os.environ.items() if key not in LAUNCH_VARIABLES}
    env.update(CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "pretrain.train", *overrides, f"run_dir={run_dir}"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [record["loss"] for record in records if "loss" in record]


def assert_zero3_starts_from_the_single_process_values(
    settings: Callable[[str, str], TrainConfig], process: ProcessInfo
) -> None:
    """``settings(run_name, zero_stage_override)``: one process, ZeRO-3 against no ZeRO. On a
    GPU, ZeRO-3's partitions live there; their initial values must still be the ones every
    other layout draws."""
    single = initial_parameters(Trainer(settings("single", "parallel.zero_stage=0"), process))
    zero3 = Trainer(settings("zero3", "parallel.zero_stage=3"), process)
    assert all(hasattr(param, "ds_tensor") for param in zero3.engine.module.parameters())  # partitioned
    gathered = initial_parameters(zero3)
    assert gathered.keys() == single.keys() and "blocks.0.attn.wq.weight" in single
    for name, value in single.items():
        torch.testing.assert_close(gathered[name], value, rtol=0, atol=0, msg=name)
