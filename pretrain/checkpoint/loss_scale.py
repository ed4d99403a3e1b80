"""fp16's dynamic loss scale across a restart.

DeepSpeed keeps the scale in its optimizer wrapper (ZeRO's ``loss_scaler``, the ZeRO-0
wrappers' ``loss_scale_config``), not in the state our checkpoints hold. Without it a resumed
fp16 run starts again at 2^16 and skips updates on overflow until the scale has come back
down: steps an uninterrupted run would have taken. The scale is the same on every rank (the
overflow check is all-reduced), so it travels in the checkpoint's metadata."""

from __future__ import annotations

from typing import Any, Optional

# What the scale's next moves depend on: the scale, the iteration count, when it last
# overflowed and (ZeRO's scaler) the overflows it still tolerates before lowering it.
SCALER_FIELDS = ("cur_scale", "cur_iter", "last_overflow_iter", "cur_hysteresis")


def dynamic_loss_scaler(optimizer: Any) -> Optional[Any]:
    """The engine optimizer's dynamic loss scaler, or None (fp32, bf16, a static scale)."""
    for attribute in ("loss_scaler", "loss_scale_config"):
        scaler = getattr(optimizer, attribute, None)
        if scaler is not None and (getattr(scaler, "dynamic", False) or getattr(scaler, "dynamic_loss_scale", False)):
            return scaler
    return None


def loss_scale_state(optimizer: Any) -> Optional[dict[str, float]]:
    scaler = dynamic_loss_scaler(optimizer)
    if scaler is None:
        return None
    return {name: getattr(scaler, name) for name in SCALER_FIELDS if hasattr(scaler, name)}


def restore_loss_scale(optimizer: Any, state: Optional[dict[str, float]]) -> None:
    """Continue with the saved scale (a checkpoint without one, or a run now in another
    precision, keeps the scaler as it starts)."""
    scaler = dynamic_loss_scaler(optimizer)
    if scaler is None or not state:
        return
    for name, value in state.items():
        if hasattr(scaler, name):
            setattr(scaler, name, value)
