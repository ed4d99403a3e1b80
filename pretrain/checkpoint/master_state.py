"""The optimizer's fp32 master weights and moments, parameter by parameter, however DeepSpeed
holds them: the checkpoint reads and writes training state only through here.

DeepSpeed keeps the state in one of four ways, depending on precision and ZeRO stage:

- fp32, ZeRO 0: the model's parameters are the masters; the state is keyed by them.
- bf16/fp16, ZeRO 0 (``FP16_UnfusedOptimizer``): an fp32 copy of each parameter, the state
  keyed by the copy.
- ZeRO 1 and 2, and the bf16 optimizer of pipelines (``BF16_Optimizer``): flat fp32
  partitions, one per data-parallel rank; each parameter links to its fragment of this rank's
  partition (``_hp_mapping``), if it has one.
- ZeRO 3: flat fp32 partitions again; each parameter owns an equal, padded slice of them.

A :class:`Fragment` is what one rank owns of one parameter: a contiguous range of the
flattened tensor-parallel slice. Data-parallel replicas of ZeRO 0 own nothing (rank 0 of
the data-parallel group speaks for them), so each value is saved exactly once per stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

WEIGHT = "param"


def state_keys(optimizer: torch.optim.Optimizer) -> tuple[str, ...]:
    """The per-parameter optimizer state a checkpoint carries."""
    if isinstance(optimizer, torch.optim.AdamW):
        return ("exp_avg", "exp_avg_sq")
    if isinstance(optimizer, torch.optim.SGD) and optimizer.defaults.get("momentum", 0):
        return ("momentum_buffer",)
    return ()


def applied_updates(optimizer: torch.optim.Optimizer) -> int:
    """Adam's step count: the updates applied so far, which is less than the training step
    when updates were skipped (an fp16 overflow, the non-finite guard); 0 before the first
    update and for an optimizer that keeps no count."""
    for state in optimizer.state.values():
        if "step" in state:
            return int(state["step"])
    return 0


@dataclass
class Fragment:
    start: int  # offset in the flattened tensor-parallel slice
    values: dict[str, Tensor]  # kind (``param`` or a state key) -> 1-D fp32 view, no copy

    @property
    def numel(self) -> int:
        return self.values[WEIGHT].numel()


class MasterState:
    def __init__(self, engine: Any, optimizer: torch.optim.Optimizer, dp_rank: int) -> None:
        self.optimizer = optimizer
        self.keys = state_keys(optimizer)
        self.replica = dp_rank != 0
        wrapper = engine.optimizer if engine.optimizer is not optimizer else None
        self.flat_groups = _flat_groups(wrapper)
        self.zero3_flats: list[Tensor] = list(getattr(wrapper, "fp32_partitioned_groups_flat", None) or [])
        self.masters = _unfused_masters(wrapper)
        if self.flat_groups and all(flat in optimizer.state for _, flat in self.flat_groups):
            self._link_state()

    # -- reading -------------------------------------------------------------------------
    def owned(self, param: nn.Parameter) -> Optional[Fragment]:
        """This rank's fragment of ``param`` (views of the live state), or None."""
        if hasattr(param, "ds_id"):
            return self._zero3_fragment(param)
        if hasattr(param, "_hp_mapping"):
            return self._linked_fragment(param)
        if self.replica:
            return None
        master = self.masters.get(id(param), param)
        flat = master.detach().reshape(-1)
        state = self.optimizer.state.get(master, {})
        values = {WEIGHT: flat}
        values.update({key: state[key].reshape(-1) if key in state else torch.zeros_like(flat) for key in self.keys})
        return Fragment(0, values)

    def _linked_fragment(self, param: nn.Parameter) -> Optional[Fragment]:
        mapping = param._hp_mapping  # type: ignore[attr-defined]
        if mapping is None:
            return None
        weight = mapping.get_hp_fragment()
        linked = mapping.optim_fragment or {}
        values = {WEIGHT: weight}
        values.update({key: linked[key] if key in linked else torch.zeros_like(weight) for key in self.keys})
        return Fragment(mapping.lp_fragment_address.start, values)

    def _zero3_fragment(self, param: nn.Parameter) -> Optional[Fragment]:
        start, numel = _zero3_range(param)
        if numel <= 0:  # a small parameter spread over many ranks: all padding here
            return None
        z3 = param._z3_optimizer  # type: ignore[attr-defined]
        values = {WEIGHT: z3.get_local_fp32_param(param)[:numel]}
        for key in self.keys:
            has_state = any(key in self.optimizer.state.get(flat, {}) for flat in self.zero3_flats)
            values[key] = z3.get_local_fp32_param(param, key)[:numel] if has_state else torch.zeros_like(values[WEIGHT])
        return Fragment(start, values)

    # -- writing -------------------------------------------------------------------------
    def prepare(self, step: int) -> None:
        """Create zero optimizer state (DeepSpeed creates it at the first update) so that
        restored values have somewhere to go; ``step`` is Adam's step count."""
        flats = [flat for _, flat in self.flat_groups] or self.zero3_flats
        holders = flats or [p for group in self.optimizer.param_groups for p in group["params"]]
        for holder in holders:
            state = {key: torch.zeros_like(holder) for key in self.keys}
            if isinstance(self.optimizer, torch.optim.AdamW):
                state["step"] = self._step_tensor(step, holder.device)
            self.optimizer.state[holder] = state
        if self.flat_groups:
            self._link_state()

    @torch.no_grad()
    def load(self, param: nn.Parameter, values: dict[str, Tensor]) -> None:
        """Set ``param``'s master weight, optimizer state and low-precision copy from the
        values of its whole tensor-parallel slice (after ``prepare``)."""
        if hasattr(param, "ds_id"):
            self._load_zero3(param, values)
            return
        param.copy_(values[WEIGHT].to(param.dtype))
        if hasattr(param, "_hp_mapping"):
            mapping = param._hp_mapping  # type: ignore[attr-defined]
            if mapping is not None:
                fragment = self._linked_fragment(param)
                assert fragment is not None
                for kind, target in fragment.values.items():
                    target.copy_(values[kind].reshape(-1).narrow(0, fragment.start, fragment.numel))
            return
        master = self.masters.get(id(param), param)
        master.copy_(values[WEIGHT])
        state = self.optimizer.state[master]
        for key in self.keys:
            state[key].copy_(values[key])

    def _load_zero3(self, param: nn.Parameter, values: dict[str, Tensor]) -> None:
        z3 = param._z3_optimizer  # type: ignore[attr-defined]
        start, numel = _zero3_range(param)
        partition = param.ds_tensor  # type: ignore[attr-defined]
        for kind, value in values.items():
            padded = torch.zeros(partition.numel(), dtype=torch.float32, device=partition.device)
            if numel > 0:
                padded[:numel] = value.reshape(-1)[start : start + numel]
            z3.set_local_hp_param(padded, param, None if kind == WEIGHT else kind)
            if kind == WEIGHT:
                partition.copy_(padded.to(partition.dtype))

    def _link_state(self) -> None:
        """Point every parameter at its fragment of the flat optimizer state. DeepSpeed 0.19
        links only the groups that had state at its first step, missing later groups."""
        from deepspeed.utils import lazy_init_hp_params_optimizer_state

        for params, flat in self.flat_groups:
            lazy_init_hp_params_optimizer_state(params, flat, self.optimizer.state)

    def _step_tensor(self, step: int, device: torch.device) -> Tensor:
        """Adam's step count where torch keeps it: on the parameters' device for the fused
        (GPU) implementation, on the CPU otherwise."""
        on_device = self.optimizer.defaults.get("fused") or self.optimizer.defaults.get("capturable")
        return torch.tensor(float(step), dtype=torch.float32, device=device if on_device else "cpu")


def _flat_groups(wrapper: Any) -> list[tuple[list[nn.Parameter], Tensor]]:
    """(parameters, their flat fp32 partition) per group, for the ZeRO 1/2 and bf16
    optimizers; empty otherwise."""
    if wrapper is None:
        return []
    params = getattr(wrapper, "bit16_groups", None) or getattr(wrapper, "bf16_groups", None)
    flats = getattr(wrapper, "single_partition_of_fp32_groups", None) or getattr(
        wrapper, "fp32_groups_flat_partition", None
    )
    return list(zip(params, flats)) if params and flats else []


def _unfused_masters(wrapper: Any) -> dict[int, Tensor]:
    """id(model parameter) -> its fp32 master, for ``FP16_UnfusedOptimizer`` (ZeRO 0 in bf16/fp16)."""
    low, high = getattr(wrapper, "fp16_groups", None), getattr(wrapper, "fp32_groups", None)
    if not low or not high:
        return {}
    return {id(p): master for lows, highs in zip(low, high) for p, master in zip(lows, highs)}


def _zero3_range(param: nn.Parameter) -> tuple[int, int]:
    """(start, valid length) of this rank's ZeRO-3 partition of ``param``, flattened."""
    size = param.ds_tensor.ds_numel  # type: ignore[attr-defined]
    start = dist.get_rank(param.ds_process_group) * size  # type: ignore[attr-defined]
    return start, min(size, param.ds_numel - start)  # type: ignore[attr-defined]
