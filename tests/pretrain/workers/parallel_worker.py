"""Runs several training configurations in one torchrun launch (each launch costs seconds
of start-up) and writes each run's per-step losses as JSON, for test_parallel.py and
test_checkpoint_state.py.

    torchrun --nproc_per_node=N tests/pretrain/workers/parallel_worker.py RUNS.json OUT.json

RUNS.json: {"name": [override, ...], ...}; the runs go in order, so a later run may
resume from an earlier one's run_dir. OUT.json: {"losses": {name: [...]}, "grad_norms":
{name: [...]}, "block_forwards": {name: n}, "stage_parts": {name: [...] or null},
"state_error": {name: e}, "save_memory": {name: [[added, shard], ...]}}: block_forwards
counts this rank's transformer-block forward passes (recomputation included), stage_parts
is the pipeline's split of its layers into stages; e is the largest difference
between the final checkpoint's saved state and the optimizer's live fp32 master state as
DeepSpeed's own accessors report it; for runs named ``save-memory*``, each rank's peak
host memory added by one more save and the bytes of its own shard; runs named
``build-memory*`` only build the model and report [added, held, whole model, largest
parameter] bytes.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from pretrain.checkpoint.directory import checkpoint_root, latest_complete
from pretrain.checkpoint.master_state import WEIGHT, state_keys
from pretrain.checkpoint.sharded import ShardedState, trained_parameters
from pretrain.config import load_train_config
from pretrain.model.gpt import Block
from pretrain.parallel.process_groups import init_distributed
from pretrain.training.trainer import Trainer


def live_master_state(trainer: Trainer, name: str, param: torch.nn.Parameter) -> dict[str, torch.Tensor]:
    """This rank's tensor-parallel slice of the fp32 master weight and moments, read the
    way DeepSpeed exposes them (collective over the data-parallel group under ZeRO)."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    keys = state_keys(trainer.optimizer)
    if hasattr(param, "ds_id") or hasattr(param, "_hp_mapping"):
        values = {WEIGHT: safe_get_full_fp32_param(param)}
        values.update({key: safe_get_full_optimizer_state(param, key) for key in keys})
        return values
    wrapper = trainer.engine.optimizer
    masters = {
        id(p): m
        for ps, ms in zip(getattr(wrapper, "fp16_groups", []), getattr(wrapper, "fp32_groups", []))
        for p, m in zip(ps, ms)
    }
    master = masters.get(id(param), param)
    state = trainer.optimizer.state[master]
    return {WEIGHT: master.detach(), **{key: state[key] for key in keys}}


def gather_tensor_parallel(value: torch.Tensor, param: torch.nn.Parameter, trainer: Trainer) -> torch.Tensor:
    dim = getattr(param, "tp_split_dim", None)
    if dim is None:
        return value
    group = trainer.grid.get_slice_parallel_group()
    parts = [torch.empty_like(value) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, value.contiguous(), group=group)
    return torch.cat(parts, dim=dim)


def state_error(trainer: Trainer) -> float:
    """Collective: max |saved - live| over every parameter and kind, on every rank."""
    error = torch.zeros(1)
    with ShardedState(latest_complete(checkpoint_root(trainer.run_dir))) as saved:
        for name, param in trained_parameters(trainer.engine.module).items():
            for kind, value in live_master_state(trainer, name, param).items():
                live = gather_tensor_parallel(
                    value.float().reshape(param.ds_shape if hasattr(param, "ds_shape") else param.shape), param, trainer
                )
                error = torch.maximum(error, (saved.full(name, kind) - live).abs().max().reshape(1))
    dist.all_reduce(error, op=dist.ReduceOp.MAX)
    return float(error)


def _status_bytes(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def save_memory(trainer: Trainer) -> list[list[int]]:
    """Collective: per rank, [peak resident memory added by a save, bytes of its shard]."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current size
    before = _status_bytes("VmRSS")
    path = trainer.save()
    added = _status_bytes("VmHWM") - before
    shard = (path / "shards" / f"rank-{dist.get_rank():05d}.safetensors").stat().st_size
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, [added, shard])
    return everyone


def build_memory(overrides: list[str], process) -> list[list[int]]:  # type: ignore[no-untyped-def]
    """Collective: per rank, [peak resident memory added while building the model the way
    the trainer does, bytes of the parameters this rank holds, bytes of the whole model,
    bytes of its largest parameter]."""
    from dataclasses import replace

    from pretrain.config import Precision
    from pretrain.model.gpt import DENSE, GPT
    from pretrain.parallel.deepspeed_config import batch_plan, deepspeed_config
    from pretrain.parallel.layout import build_grid, sharded_construction, validate_layout
    from pretrain.parallel.tensor import TensorParallelLayers

    cfg = load_train_config(overrides)
    layout = validate_layout(cfg, process.world_size)
    grid = build_grid(layout)
    layers = TensorParallelLayers(grid.get_slice_parallel_group()) if layout.tp > 1 else DENSE
    model_cfg = replace(cfg.model, vocab_size=256)
    ds_config = deepspeed_config(cfg, batch_plan(cfg.train, layout.dp), Precision.fp32)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_bytes("VmRSS")
    with sharded_construction(ds_config, grid, cfg.parallel.zero_stage):
        model = GPT(model_cfg, layers, seed=cfg.train.seed)
    added = _status_bytes("VmHWM") - before
    held = sum(4 * (p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel()) for p in model.parameters())
    with torch.device("meta"):
        sizes = [4 * p.numel() for p in GPT(model_cfg).parameters()]
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, [added, held, sum(sizes), max(sizes)])
    return everyone


def count_block_forwards() -> dict[str, int]:
    """Count every training forward pass of a transformer block, recomputations included
    (the pipeline's stages are Blocks too)."""
    counter = {"n": 0}
    forward = Block.forward

    def counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        counter["n"] += self.training  # training forwards only: evaluation runs in eval mode
        return forward(self, *args, **kwargs)

    Block.forward = counted  # type: ignore[method-assign]
    return counter


# Every transformer-block forward pass is counted (the test of activation checkpointing).
BLOCK_FORWARDS = count_block_forwards()


def run_report(name: str, overrides: list[str], process) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """What the tests read of one run (collective: every rank calls it)."""
    if name.startswith("build-memory"):
        return {"save_memory": build_memory(overrides, process)}
    trainer = Trainer(load_train_config(overrides), process)
    BLOCK_FORWARDS["n"] = 0
    records = trainer.fit()
    stage_parts = getattr(trainer.engine.module, "parts", None)
    report = {
        "losses": [record["loss"] for record in records],
        "grad_norms": [record["grad_norm"] for record in records],
        "block_forwards": BLOCK_FORWARDS["n"],
        "stage_parts": None if stage_parts is None else [int(part) for part in stage_parts],
        "state_error": state_error(trainer),  # fit() ends with a checkpoint of the last step
    }
    if name.startswith("save-memory"):
        report["save_memory"] = save_memory(trainer)
    return report


def main(runs_file: str, out_file: str, result_of: Callable[..., dict[str, Any]] = run_report) -> None:
    """Runs each of RUNS.json's ``{name: overrides}`` in turn and writes OUT.json as
    ``{field: {name: value}}`` from ``result_of(name, overrides, process)``."""
    runs = json.loads(open(runs_file).read())
    process = init_distributed()
    report: dict[str, dict[str, Any]] = {}
    for name, overrides in runs.items():
        # An error ends the whole launch (torchrun stops the other ranks); catching it here
        # would leave the ranks that did not fail waiting in the next run's collectives.
        for field, value in result_of(name, overrides, process).items():
            report.setdefault(field, {})[name] = value
        dist.barrier()
    if process.is_main:
        with open(out_file, "w") as out:
            json.dump(report, out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
