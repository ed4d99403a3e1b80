"""One full-precision state dict from any training checkpoint: what evaluation, generation
and export load. No DeepSpeed engine and no process group are needed."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from pretrain.checkpoint import checkpoint_root, is_complete, latest_complete, read_metadata
from pretrain.layout_free import DIRECTORY as LAYOUT_FREE_DIRECTORY
from pretrain.layout_free import WEIGHT, read_layout_free
from pretrain.model import GPT
from pretrain.model_config import ModelConfig
from data_pipeline.formats.special_tokens import SpecialTokens


def find_checkpoint(path: str | Path) -> Path:
    """Accept a run directory (its newest complete checkpoint), a ``checkpoints/`` directory,
    or one checkpoint directory."""
    path = Path(path)
    if is_complete(path):
        return path
    for root in (checkpoint_root(path), path):
        latest = latest_complete(root)
        if latest is not None:
            return latest
    raise FileNotFoundError(f"{path}: no complete checkpoint here (expected a run dir, its checkpoints/, or a step-N dir)")


def consolidated_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    """fp32 weights of the whole model, however training sharded them: from the layout-free
    state when the checkpoint has it, else from DeepSpeed's files (for ZeRO 0 these hold the
    module's own weights, so a bf16 run without layout-free state gives bf16-rounded ones)."""
    if (checkpoint / LAYOUT_FREE_DIRECTORY).is_dir():
        return read_layout_free(checkpoint, kinds=[WEIGHT])[WEIGHT]
    # Without the layout-free state, only layouts without tensor or pipeline parallelism
    # can be put back together here.
    metadata = read_metadata(checkpoint)
    layout = metadata.get("layout", {})
    if layout.get("tp", 1) > 1 or layout.get("pp", 1) > 1:
        raise ValueError(f"{checkpoint}: saved with {layout} and without layout-free state; cannot consolidate")
    zero_stage = metadata["config"]["parallel"]["zero_stage"]
    if zero_stage == 0:
        # Every rank held the whole model; DeepSpeed's own file format needs its unpickler.
        state = torch.load(checkpoint / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
        return {name: tensor.float() for name, tensor in state["module"].items()}
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per shard
        state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint.parent), tag=checkpoint.name)
    return {name: tensor.float() for name, tensor in state.items()}


def model_config_from_metadata(metadata: dict[str, Any]) -> ModelConfig:
    config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), metadata["model"]))
    assert isinstance(config, ModelConfig)
    return config


def load_trained_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[GPT, SpecialTokens, dict[str, Any]]:
    """The trained model (eval mode, fp32), its tokenizer's special tokens and the checkpoint
    metadata, from a run dir or checkpoint dir."""
    checkpoint = find_checkpoint(path)
    metadata = read_metadata(checkpoint)
    with torch.device("meta"):
        model = GPT(model_config_from_metadata(metadata))
    model.load_state_dict(consolidated_state_dict(checkpoint), assign=True, strict=True)
    special = SpecialTokens(**{**metadata["tokenizer"], "sentinel_ids": tuple(metadata["tokenizer"]["sentinel_ids"])})
    return model.to(device).eval(), special, metadata
