"""A trained model and its tokenizer, from a run directory or one checkpoint directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import MISSING

from pretrain.checkpoint.consolidate import load_trained_model
from pretrain.checkpoint.directory import find_checkpoint
from pretrain.choices import Choice
from pretrain.inference.tokenizer import StartToken, TextTokenizer
from pretrain.model.gpt import GPT


class DType(Choice):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@dataclass
class InferenceConfig:
    """The settings generate and evaluate share."""

    # A run directory (its newest complete checkpoint), its checkpoints/, or a step-N directory.
    checkpoint: str = MISSING
    # The tokenizer directory; default: <run dir>/tokenizer, the copy training keeps.
    tokenizer: Optional[str] = None
    # auto: the first GPU when there is one, else the CPU.
    device: str = "auto"
    dtype: DType = DType.float32
    # What precedes every prompt or context (see StartToken).
    start_token: StartToken = StartToken.auto


def checkpoint_tokenizer_dir(checkpoint: Path, override: Optional[str]) -> Path:
    """The given tokenizer directory, or the copy in the checkpoint's run directory."""
    if override:
        return Path(override)
    directory = checkpoint.parent.parent / "tokenizer"
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: the run has no tokenizer copy; set tokenizer=<tokenizer dir>")
    return directory


def load_tokenizer(checkpoint: Path, override: Optional[str], metadata: dict[str, Any]) -> TextTokenizer:
    tokenizer = TextTokenizer.load(checkpoint_tokenizer_dir(checkpoint, override))
    trained_with = metadata["tokenizer"].get("tokenizer_hash", "")
    if trained_with and trained_with != tokenizer.special.tokenizer_hash:
        raise ValueError(
            f"tokenizer={tokenizer.directory} is {tokenizer.special.tokenizer_hash[:12]}, but {checkpoint} was "
            f"trained with {trained_with[:12]}; point tokenizer to the tokenizer the run was trained with"
        )
    return tokenizer


# What an objective other than clm trained the model for, and so what a causal use gives.
OBJECTIVE_ATTENTION = {
    "mlm": "bidirectional attention, filling in masked tokens",
    "span": "prefix-LM attention, restoring corrupted spans",
}


def non_causal_warning(metadata: dict[str, Any], what_you_get: str) -> Optional[str]:
    """A warning for running a model trained with another objective than clm causally."""
    objective = metadata["config"]["objective"]["name"]
    if objective not in OBJECTIVE_ATTENTION:
        return None
    return (
        f"warning: this model was trained with objective={objective} ({OBJECTIVE_ATTENTION[objective]}); {what_you_get}"
    )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class InferenceModel:
    model: GPT
    tokenizer: TextTokenizer
    checkpoint: Path
    metadata: dict[str, Any]


def load_for_inference(config: InferenceConfig) -> InferenceModel:
    checkpoint = find_checkpoint(config.checkpoint)
    model, _, metadata = load_trained_model(checkpoint, resolve_device(config.device))
    tokenizer = load_tokenizer(checkpoint, config.tokenizer, metadata)
    model = model.to(getattr(torch, config.dtype.value))
    return InferenceModel(model, tokenizer, checkpoint, metadata)
