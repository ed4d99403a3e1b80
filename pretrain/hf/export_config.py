"""Our model config as a Hugging Face config: ``LlamaForCausalLM`` for a model trained here,
or the architecture a model was imported from (``Qwen2ForCausalLM``, ``MistralForCausalLM``).

The three are pre-norm RMSNorm + SwiGLU + rotary positions (rotate-half layout, as ours)
with grouped-query attention and optional tied embeddings; they differ in which biases they
have and in Mistral's sliding window. LayerNorm, the GELU MLP and learned absolute positions
have no counterpart. Dropout is not carried over (an export is for inference).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from data_pipeline.formats.special_tokens import SpecialTokens
from pretrain.model.config import Activation, ModelConfig, Norm, Position

if TYPE_CHECKING:
    from transformers import PretrainedConfig

LLAMA = "LlamaForCausalLM"
# Architecture → transformers model_type.
MODEL_TYPES = {LLAMA: "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2"}
# (q/k/v, output, MLP) biases of the architectures whose biases are fixed.
FIXED_BIASES = {"MistralForCausalLM": (False, False, False), "Qwen2ForCausalLM": (True, False, False)}

UNMAPPABLE = (
    ("norm", Norm.layernorm, "the Llama family has RMSNorm only"),
    ("activation", Activation.gelu, "the Llama family has the SwiGLU MLP only"),
    ("position", Position.learned, "the Llama family has rotary positions only"),
)


def architecture_of(cfg: ModelConfig) -> str:
    return cfg.hf_architecture or LLAMA


def biases(cfg: ModelConfig) -> tuple[bool, bool, bool]:
    return cfg.has_bias(cfg.qkv_bias), cfg.has_bias(cfg.attn_out_bias), cfg.has_bias(cfg.mlp_bias)


def _refuse(setting: str, reason: str) -> None:
    raise ValueError(
        f"{setting} cannot be exported to Hugging Face: {reason}; export the safetensors weights alone with hf=false"
    )


def check_exportable(cfg: ModelConfig) -> None:
    """One clear error for the first setting the target architecture cannot express."""
    architecture = architecture_of(cfg)
    if architecture not in MODEL_TYPES:
        _refuse(f"model.hf_architecture={architecture}", f"supported are {', '.join(MODEL_TYPES)}")
    for setting, value, reason in UNMAPPABLE:
        if getattr(cfg, setting) is value:
            _refuse(f"model.{setting}={value.value}", reason)
    qkv, out, mlp = biases(cfg)
    if architecture == LLAMA and qkv != out:
        _refuse(f"model.qkv_bias={qkv} with model.attn_out_bias={out}", "LlamaForCausalLM has one attention_bias")
    if architecture in FIXED_BIASES and (qkv, out, mlp) != FIXED_BIASES[architecture]:
        _refuse(f"biases (q/k/v, output, MLP) = {(qkv, out, mlp)}", f"{architecture} has {FIXED_BIASES[architecture]}")
    if cfg.sliding_window is not None and architecture != "MistralForCausalLM":
        _refuse(f"model.sliding_window={cfg.sliding_window}", f"{architecture} has no sliding window here")


def rope_parameters(cfg: ModelConfig) -> dict[str, Any]:
    scaling = cfg.active_rope_scaling
    if scaling is None:
        return {"rope_type": "default", "rope_theta": cfg.rope_theta}
    return {
        "rope_type": "llama3",
        "rope_theta": cfg.rope_theta,
        "factor": scaling.factor,
        "low_freq_factor": scaling.low_freq_factor,
        "high_freq_factor": scaling.high_freq_factor,
        "original_max_position_embeddings": scaling.original_max_seq_len,
    }


def hf_config(cfg: ModelConfig, special: SpecialTokens) -> PretrainedConfig:
    """The Hugging Face config of our model. Its vocabulary is the padded one (the embedding
    rows); the tokenizer keeps the real one, and the padding ids are never produced by it."""
    from transformers import AutoConfig

    check_exportable(cfg)
    architecture = architecture_of(cfg)
    qkv, _, mlp = biases(cfg)
    family_fields: dict[str, Any] = {
        LLAMA: {"attention_bias": qkv, "mlp_bias": mlp},
        "MistralForCausalLM": {"sliding_window": cfg.sliding_window},
        "Qwen2ForCausalLM": {"use_sliding_window": False},
    }[architecture]
    return AutoConfig.for_model(
        MODEL_TYPES[architecture],
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
        rope_parameters=rope_parameters(cfg),
        tie_word_embeddings=cfg.tie_embeddings,
        initializer_range=cfg.init_std,
        bos_token_id=special.bos_id,
        eos_token_id=special.eos_id,
        pad_token_id=special.pad_id,
        architectures=[architecture],
        **family_fields,
    )
