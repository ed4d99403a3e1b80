"""A checkpoint that does not depend on the parallel layout.

Next to DeepSpeed's own (sharded) files, every checkpoint holds the whole model in fp32 and
the optimizer's per-parameter state (Adam moments, SGD momentum), each tensor complete and
named as in the single-device ``GPT``: ``layout-free/stage-NNN.safetensors``, one file per
pipeline stage, written by that stage's first tensor-parallel and data-parallel rank.

Resuming under another layout (dp, tp, pp or ZeRO stage changed) reads these files and
gives every rank its slice; export and evaluation read them without DeepSpeed at all.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from pretrain.init import shard_of

DIRECTORY = "layout-free"
WEIGHT = "param"


def _state_keys(optimizer: torch.optim.Optimizer) -> tuple[str, ...]:
    if isinstance(optimizer, torch.optim.AdamW):
        return ("exp_avg", "exp_avg_sq")
    if isinstance(optimizer, torch.optim.SGD) and optimizer.defaults.get("momentum", 0):
        return ("momentum_buffer",)
    return ()


class _OptimizerView:
    """Full (unpartitioned) fp32 weights and optimizer state of each local parameter, over
    the ways DeepSpeed may hold them: plain (ZeRO 0, fp32), flat partitions with per-parameter
    fragment maps (ZeRO 1 and 2, and its bf16 optimizer), or ZeRO-3 partitions."""

    def __init__(self, engine: Any, optimizer: torch.optim.Optimizer) -> None:
        self.engine = engine
        self.optimizer = optimizer
        self.keys = _state_keys(optimizer)
        self.wrapper = engine.optimizer if engine.optimizer is not optimizer else None
        self.groups = self._flat_groups()
        if self.groups and all(flat in optimizer.state for _, flat in self.groups):
            self._link_state()

    def _flat_groups(self) -> list[tuple[list[nn.Parameter], torch.Tensor]]:
        """(parameters, their flat fp32 partition) per group, for the ZeRO 1/2 and bf16
        optimizers; empty otherwise."""
        if self.wrapper is None:
            return []
        params = getattr(self.wrapper, "bit16_groups", None) or getattr(self.wrapper, "bf16_groups", None)
        flats = getattr(self.wrapper, "single_partition_of_fp32_groups", None) or getattr(
            self.wrapper, "fp32_groups_flat_partition", None
        )
        return list(zip(params, flats)) if params and flats else []

    def _link_state(self) -> None:
        """Point every parameter at its fragment of the flat optimizer state. DeepSpeed 0.19
        links only the groups that had state at its first step, missing later groups."""
        from deepspeed.utils import lazy_init_hp_params_optimizer_state

        for params, flat in self.groups:
            lazy_init_hp_params_optimizer_state(params, flat, self.optimizer.state)

    def _partitioned(self, param: nn.Parameter) -> bool:
        return hasattr(param, "_hp_mapping") or hasattr(param, "ds_id")

    def get(self, param: nn.Parameter) -> dict[str, torch.Tensor]:
        """Collective over the data-parallel group when ZeRO partitions the parameter."""
        from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

        if not self._partitioned(param):
            state = self.optimizer.state.get(param, {})
            out = {WEIGHT: param.detach().float()}
            out.update({key: state[key].float() if key in state else torch.zeros_like(out[WEIGHT]) for key in self.keys})
            return out
        out = {WEIGHT: safe_get_full_fp32_param(param)}
        for key in self.keys:
            value = safe_get_full_optimizer_state(param, key) if self._has_state() else None
            out[key] = value if value is not None else torch.zeros_like(out[WEIGHT])
        return out

    def _has_state(self) -> bool:
        return len(self.optimizer.state) > 0

    def _step_tensor(self, step: int, device: torch.device) -> torch.Tensor:
        """Adam's step count where torch keeps it: on the parameters' device for the fused
        (GPU) implementation, on the CPU otherwise."""
        on_device = self.optimizer.defaults.get("fused") or self.optimizer.defaults.get("capturable")
        return torch.tensor(float(step), dtype=torch.float32, device=device if on_device else "cpu")

    def prepare_state(self, step: int) -> None:
        """Create the optimizer state DeepSpeed would only create at the first update, so
        that restored values have somewhere to go."""
        if self.wrapper is None:
            return
        if not self.groups:
            raise NotImplementedError(
                f"resuming under a different layout is not supported with {type(self.wrapper).__name__} "
                "(e.g. ZeRO-3); resume with the layout the checkpoint was saved with"
            )
        for _, flat in self.groups:
            state = {key: torch.zeros_like(flat) for key in self.keys}
            if isinstance(self.optimizer, torch.optim.AdamW):
                state["step"] = self._step_tensor(step, flat.device)
            self.optimizer.state[flat] = state
        self._link_state()

    def set(self, param: nn.Parameter, values: dict[str, torch.Tensor], step: int) -> None:
        from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

        with torch.no_grad():
            param.copy_(values[WEIGHT].to(param.dtype))
        if not self._partitioned(param):
            state = {key: values[key].clone() for key in self.keys}
            if isinstance(self.optimizer, torch.optim.AdamW):
                state["step"] = self._step_tensor(step, param.device)
            self.optimizer.state[param] = state
            return
        safe_set_full_fp32_param(param, values[WEIGHT])
        for key in self.keys:
            safe_set_full_optimizer_state(param, values[key], key)


def _gather_tensor_parallel(value: torch.Tensor, param: nn.Parameter, group: dist.ProcessGroup | None) -> torch.Tensor:
    dim = getattr(param, "tp_split_dim", None)
    if dim is None or group is None:
        return value
    parts = [torch.empty_like(value) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, value.contiguous(), group=group)
    return torch.cat(parts, dim=dim)


def save_layout_free(
    engine: Any,
    optimizer: torch.optim.Optimizer,
    named_parameters: dict[str, nn.Parameter],
    path: Path,
    grid: Any,
) -> None:
    """Collective: every rank calls it with its canonical local parameters."""
    view = _OptimizerView(engine, optimizer)
    tp_group = grid.get_slice_parallel_group() if grid.get_slice_parallel_world_size() > 1 else None
    tensors: dict[str, torch.Tensor] = {}
    for name, param in named_parameters.items():
        for key, value in view.get(param).items():
            tensors[f"{key}/{name}"] = _gather_tensor_parallel(value, param, tp_group).cpu().contiguous()
    if grid.get_data_parallel_rank() == 0 and grid.get_slice_parallel_rank() == 0:
        directory = path / DIRECTORY
        directory.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(directory / f"stage-{grid.get_stage_id():03d}.safetensors"))


def read_layout_free(path: Path, kinds: Iterable[str] | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """{kind: {parameter name: full tensor}} from one checkpoint, kind being ``param`` or an
    optimizer state key."""
    directory = path / DIRECTORY
    files = sorted(directory.glob("stage-*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"{directory}: no layout-free state in this checkpoint (saved with train.layout_free_checkpoint=false?); "
            "resume with the layout it was saved with"
        )
    wanted = None if kinds is None else set(kinds)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as stored:  # reads only the tensors asked for
            for key in stored.keys():
                kind, name = key.split("/", 1)
                if (wanted is None or kind in wanted) and name not in out.get(kind, {}):  # a tied embedding is in two stages
                    out.setdefault(kind, {})[name] = stored.get_tensor(key)
    return out


def load_layout_free(
    engine: Any,
    optimizer: torch.optim.Optimizer,
    named_parameters: dict[str, nn.Parameter],
    path: Path,
    step: int,
) -> None:
    """Give every local parameter (and its optimizer state) its slice of the saved tensors."""
    view = _OptimizerView(engine, optimizer)
    saved = read_layout_free(path, kinds=(WEIGHT, *view.keys))
    missing = [name for name in named_parameters if name not in saved.get(WEIGHT, {})]
    if missing:
        raise KeyError(f"{path}: the checkpoint has no {missing[:3]}...; was it saved from a different model config?")
    absent_state = [key for key in view.keys if key not in saved]
    if absent_state:
        raise KeyError(
            f"{path}: no optimizer state {absent_state}; it was saved with another optimizer (optim.name); "
            "resume with the same one"
        )
    view.prepare_state(step)
    for name, param in named_parameters.items():
        values = {kind: shard_of(saved[kind][name], param).to(param.device) for kind in (WEIGHT, *view.keys)}
        view.set(param, values, step)
