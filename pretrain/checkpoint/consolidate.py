"""One full-precision state dict from any training checkpoint: what evaluation, generation
and export load. No DeepSpeed engine and no process group are needed. A LoRA run's
checkpoint holds its adapters alone: its model is the base it names, rebuilt as training
built it, with the adapters merged in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from data_pipeline.formats.special_tokens import SpecialTokens
from pretrain.checkpoint.directory import find_checkpoint, model_config_from_metadata, read_metadata
from pretrain.checkpoint.master_state import WEIGHT
from pretrain.checkpoint.sharded import ShardedState
from pretrain.config import TrainConfig
from pretrain.hf.init_from import load_initial_weights
from pretrain.model.gpt import GPT
from pretrain.model.lora import base_identity, check_same_base, merged


def consolidated_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    """fp32 master weights of the whole model, however training sharded them (safetensors
    only: nothing is unpickled)."""
    with ShardedState(checkpoint) as saved:
        return dict(saved.tensors(WEIGHT))


def train_config_from_metadata(metadata: dict[str, Any]) -> TrainConfig:
    config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainConfig), metadata["config"]))
    assert isinstance(config, TrainConfig)
    return config


def is_lora_checkpoint(metadata: dict[str, Any]) -> bool:
    return "lora_base" in metadata


def lora_base_weights(checkpoint: Path, metadata: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The frozen base a LoRA run trained on, as the trainer built it: initialized from the
    run's seed, then read from ``init_from`` when it had one (refused if that changed)."""
    cfg = train_config_from_metadata(metadata)
    check_same_base(metadata["lora_base"], base_identity(cfg.init_from, cfg.train.seed), checkpoint)
    model = GPT(model_config_from_metadata(metadata), seed=cfg.train.seed)
    load_initial_weights(cfg, model, resuming=False)
    return {name: param.detach() for name, param in model.state_dict().items()}


def model_state_dict(checkpoint: Path, metadata: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The whole model's fp32 weights; a LoRA run's with its adapters merged."""
    saved = consolidated_state_dict(checkpoint)
    if not is_lora_checkpoint(metadata):
        return saved
    lora = train_config_from_metadata(metadata).lora
    return merged(lora_base_weights(checkpoint, metadata), saved, lora.scaling)


def load_trained_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[GPT, SpecialTokens, dict[str, Any]]:
    """The trained model (eval mode, fp32), its tokenizer's special tokens and the checkpoint
    metadata, from a run dir or checkpoint dir."""
    checkpoint = find_checkpoint(path)
    metadata = read_metadata(checkpoint)
    with torch.device("meta"):
        model = GPT(model_config_from_metadata(metadata))
    model.load_state_dict(model_state_dict(checkpoint, metadata), assign=True, strict=True)
    special = SpecialTokens(**{**metadata["tokenizer"], "sentinel_ids": tuple(metadata["tokenizer"]["sentinel_ids"])})
    return model.to(device).eval(), special, metadata
