"""Our parameter names ↔ the Hugging Face Llama-family names (Llama, Mistral and Qwen2 share them)."""

from __future__ import annotations

import re

from torch import Tensor

# (our name, theirs) as full-match patterns; every weight must match one.
RENAMES = (
    (r"embed\.tokens\.weight", r"model.embed_tokens.weight"),
    (r"blocks\.(\d+)\.attn_norm\.weight", r"model.layers.\1.input_layernorm.weight"),
    (r"blocks\.(\d+)\.attn\.w([qkvo])\.(weight|bias)", r"model.layers.\1.self_attn.\2_proj.\3"),
    (r"blocks\.(\d+)\.mlp_norm\.weight", r"model.layers.\1.post_attention_layernorm.weight"),
    (r"blocks\.(\d+)\.mlp\.(gate|up|down)\.(weight|bias)", r"model.layers.\1.mlp.\2_proj.\3"),
    (r"head\.norm\.weight", r"model.norm.weight"),
    (r"head\.proj\.weight", r"lm_head.weight"),
)


def hf_name(name: str) -> str:
    for pattern, replacement in RENAMES:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, replacement, name)
    raise KeyError(f"weight {name!r} has no Hugging Face counterpart; pretrain/hf/names.py's RENAMES lacks it")


def hf_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our consolidated weights under Hugging Face names (contiguous, as safetensors wants them)."""
    return {hf_name(name): tensor.contiguous() for name, tensor in state.items()}
