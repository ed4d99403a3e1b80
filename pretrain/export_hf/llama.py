"""Our GPT as a Hugging Face ``LlamaForCausalLM``: the config and the weight names.

Llama is pre-norm RMSNorm + SwiGLU + rotary positions (rotate-half layout, as ours) with
grouped-query attention, optional tied embeddings and optional biases, so such a model maps
one to one. LayerNorm, the GELU MLP and learned absolute positions have no Llama
counterpart. Dropout is not carried over (an export is for inference).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from torch import Tensor

from pretrain.model_config import Activation, ModelConfig, Norm, Position
from data_pipeline.formats.special_tokens import SpecialTokens

if TYPE_CHECKING:
    from transformers import LlamaConfig

# (our name, Llama's name) as full-match patterns; every weight must match one.
RENAMES = (
    (r"embed\.tokens\.weight", r"model.embed_tokens.weight"),
    (r"blocks\.(\d+)\.attn_norm\.weight", r"model.layers.\1.input_layernorm.weight"),
    (r"blocks\.(\d+)\.attn\.w([qkvo])\.(weight|bias)", r"model.layers.\1.self_attn.\2_proj.\3"),
    (r"blocks\.(\d+)\.mlp_norm\.weight", r"model.layers.\1.post_attention_layernorm.weight"),
    (r"blocks\.(\d+)\.mlp\.(gate|up|down)\.(weight|bias)", r"model.layers.\1.mlp.\2_proj.\3"),
    (r"head\.norm\.weight", r"model.norm.weight"),
    (r"head\.proj\.weight", r"lm_head.weight"),
)

UNMAPPABLE = (
    ("norm", Norm.layernorm, "LlamaForCausalLM has RMSNorm only"),
    ("activation", Activation.gelu, "LlamaForCausalLM has the SwiGLU MLP only"),
    ("position", Position.learned, "LlamaForCausalLM has rotary positions only"),
)


def check_llama_compatible(cfg: ModelConfig) -> None:
    for setting, value, reason in UNMAPPABLE:
        if getattr(cfg, setting) is value:
            raise ValueError(
                f"model.{setting}={value.value} cannot be exported to Hugging Face: {reason}; "
                "export the safetensors weights alone with hf=false"
            )


def llama_config(cfg: ModelConfig, special: SpecialTokens) -> "LlamaConfig":
    """The Llama config of our model. Its vocabulary is the padded one (the embedding rows);
    the tokenizer keeps the real one, and the padding ids are never produced by it."""
    from transformers import LlamaConfig

    check_llama_compatible(cfg)
    return LlamaConfig(
        vocab_size=cfg.padded_vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.ffn_dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.head_dim,
        hidden_act="silu",
        max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=cfg.tie_embeddings,
        attention_bias=cfg.bias,
        mlp_bias=cfg.bias,
        initializer_range=cfg.init_std,
        bos_token_id=special.bos_id,
        eos_token_id=special.eos_id,
        pad_token_id=special.pad_id,
        architectures=["LlamaForCausalLM"],
    )


def llama_name(name: str) -> str:
    for pattern, replacement in RENAMES:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, replacement, name)
    raise KeyError(f"weight {name!r} has no LlamaForCausalLM counterpart; the export's RENAMES table lacks it")


def llama_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our consolidated weights under Llama's names (contiguous, as safetensors wants them)."""
    return {llama_name(name): tensor.contiguous() for name, tensor in state.items()}
