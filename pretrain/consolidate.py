"""One full-precision state dict from any training checkpoint: what evaluation, generation
and export load. No DeepSpeed engine and no process group are needed."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from pretrain.checkpoint import checkpoint_root, is_complete, latest_complete, read_metadata
from pretrain.parallel.master_state import WEIGHT
from pretrain.parallel.sharded_checkpoint import ShardedState
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
    """fp32 master weights of the whole model, however training sharded them (safetensors
    only: nothing is unpickled)."""
    with ShardedState(checkpoint) as saved:
        return dict(saved.tensors(WEIGHT))


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
