"""Trains several configurations for one step in one torchrun launch and writes, per run and
rank, the bytes of weights, gradients and optimizer state that the DeepSpeed engine holds
when the optimizer steps, for test_plan.py to compare with the planner's prediction.

    torchrun --nproc_per_node=N tests/pretrain/workers/plan_worker.py RUNS.json OUT.json

RUNS.json: {"name": [override, ...], ...}; OUT.json: {"name": [{"weights": ..., ...}, ...]}
with one entry per rank, in rank order.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from pretrain.config import load_train_config
from pretrain.parallel.process_groups import init_distributed
from pretrain.training.trainer import Trainer


def _tensors(tensors) -> dict[tuple[int, int], int]:
    """Bytes of the distinct tensors in ``tensors``, by address and size (a tensor that is
    a view of a larger buffer counts its own elements; a tensor seen twice counts once)."""
    return {(t.data_ptr(), t.numel()): t.numel() * t.element_size() for t in tensors if t is not None and t.numel()}


def held_bytes(trainer: Trainer) -> dict[str, int]:
    """Weights, gradients and optimizer state of this rank, read from the engine's tensors
    when the torch optimizer steps (gradients complete, state allocated). DeepSpeed's ZeRO
    steps it once per parameter group, so the storages of all calls are collected."""
    gradients: dict[tuple[int, int], int] = {}
    state: dict[tuple[int, int], int] = {}
    module_params = list(trainer.engine.module.parameters())

    def before_step(opt, args, kwargs) -> None:
        stepped = [p for group in opt.param_groups for p in group["params"]]
        gradients.update(_tensors([p.grad for p in module_params] + [p.grad for p in stepped]))

    def after_step(opt, args, kwargs) -> None:
        own = {id(p) for p in module_params}
        masters = [p for group in opt.param_groups for p in group["params"] if id(p) not in own]  # ZeRO's fp32 copies
        state.update(
            _tensors(masters + [t for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor)])
        )

    trainer.optimizer.register_step_pre_hook(before_step)
    trainer.optimizer.register_step_post_hook(after_step)
    trainer.fit()
    # ZeRO-3 keeps each rank's slice of a parameter in ds_tensor; the module's tensor is
    # empty, or whole for the parameters it keeps gathered (below its persistence threshold).
    weights = _tensors(module_params) | _tensors(getattr(p, "ds_tensor", None) for p in module_params)
    return {"weights": sum(weights.values()), "gradients": sum(gradients.values()), "optimizer": sum(state.values())}


def main(runs_file: str, out_file: str) -> None:
    runs = json.loads(open(runs_file).read())
    process = init_distributed()
    results: dict[str, list[dict]] = {}
    for name, overrides in runs.items():
        measured = held_bytes(Trainer(load_train_config(overrides), process))
        gathered: list = [None] * process.world_size
        dist.all_gather_object(gathered, measured)
        results[name] = gathered
    if process.is_main:
        with open(out_file, "w") as out:
            json.dump(results, out)
    # Fourteen engines' gloo groups: shut down cleanly, or a rank can abort at exit.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
