"""LoRA adapters in the format of Hugging Face's ``peft`` (``adapter_config.json`` and
``adapter_model.safetensors``), which ``peft.PeftModel.from_pretrained`` loads onto the
exported base model."""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor

from pretrain.hf.names import hf_name
from pretrain.hf.writer import save_shareable
from pretrain.model.lora import TARGET_MODULES, LoraConfig, base_weight_name

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."


def peft_name(name: str) -> str:
    """``blocks.0.attn.wq.lora.a`` -> ``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``."""
    module = hf_name(base_weight_name(name)).removesuffix(".weight")
    return f"{PREFIX}{module}.lora_{'A' if name.endswith('.a') else 'B'}.weight"


def peft_module(target: str) -> str:
    """A target's linear as Hugging Face names it (``q`` -> ``q_proj``)."""
    return hf_name(f"blocks.0.{TARGET_MODULES[target]}.weight").split(".")[-2]


def adapter_config(cfg: LoraConfig, base_model: str) -> dict:
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": cfg.rank,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": sorted(peft_module(target) for target in cfg.targets),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "init_lora_weights": True,
        "inference_mode": True,
    }


def write_adapter(directory: Path, adapters: dict[str, Tensor], cfg: LoraConfig, base_model: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ADAPTER_CONFIG).write_text(json.dumps(adapter_config(cfg, base_model), indent=2) + "\n")
    weights = {peft_name(name): tensor.contiguous() for name, tensor in adapters.items()}
    save_shareable(weights, directory / ADAPTER_WEIGHTS, {"format": "pt"})
