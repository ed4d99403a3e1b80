"""A Hugging Face ``config.json`` as our model config, for the families our GPT expresses.

Llama 2/3 (with Llama 3's rope scaling; TinyLlama and SmolLM are Llama with tied
embeddings), Mistral (sliding window recorded; training refuses sequences longer than it)
and Qwen2 (biases on q, k, v only). Every field of ``config.json`` is either mapped, checked
to hold the one value we express, or known metadata: anything else is an error naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from pretrain.hf.export_config import MODEL_TYPES
from pretrain.model.config import ModelConfig, RopeScaling

CONFIG_FILENAME = "config.json"
SUPPORTED = "llama (Llama 2/3, TinyLlama, SmolLM), mistral, qwen2"
ARCHITECTURES = {model_type: architecture for architecture, model_type in MODEL_TYPES.items()}

# Fields that describe the file or inference, not the network; read elsewhere (token ids)
# or irrelevant to training.
METADATA = {
    "architectures",
    "model_type",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "use_cache",
    "_name_or_path",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "id2label",
    "label2id",
    "problem_type",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "tokenizer_class",
    # Llama 2's pretraining_tp only split its matmuls in Meta's training (same result).
    "pretraining_tp",
}
COMMON = {
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "tie_word_embeddings",
    "attention_dropout",
    "initializer_range",
}
REQUIRED = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
)
FAMILY_FIELDS = {
    "llama": {"attention_bias", "mlp_bias"},
    "mistral": {"sliding_window"},
    "qwen2": {"use_sliding_window", "sliding_window", "max_window_layers", "layer_types"},
}


class UnsupportedConfig(ValueError):
    """A config.json field or value our model cannot express."""


def read_hf_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILENAME
    if not path.is_file():
        raise FileNotFoundError(
            f"init_from={directory}: no {CONFIG_FILENAME}; point it to a Hugging Face model directory"
        )
    return json.loads(path.read_text())


def _refuse(path: Path, field: str, value: Any, supported: str) -> UnsupportedConfig:
    return UnsupportedConfig(f"{path}: {field}={value!r} is not supported; supported: {supported}")


def _rope(config: dict[str, Any], path: Path) -> tuple[float, RopeScaling]:
    """(theta, Llama 3 scaling) from transformers 5's ``rope_parameters`` or the older
    ``rope_theta`` + ``rope_scaling``."""
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    theta = float(params.get("rope_theta", config.get("rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return theta, RopeScaling()
    if kind != "llama3":
        raise _refuse(path, "rope_scaling.rope_type", kind, "default, llama3")
    scaling = RopeScaling(
        factor=float(params["factor"]),
        low_freq_factor=float(params["low_freq_factor"]),
        high_freq_factor=float(params["high_freq_factor"]),
        original_max_seq_len=int(params["original_max_position_embeddings"]),
    )
    return theta, scaling


def _sliding_window(config: dict[str, Any], model_type: str, path: Path) -> Optional[int]:
    if model_type == "mistral":
        return config.get("sliding_window")
    if model_type == "qwen2":
        if config.get("use_sliding_window"):
            raise _refuse(path, "use_sliding_window", True, "false (Qwen2's per-layer sliding window is not expressed)")
        kinds = set(config.get("layer_types") or ["full_attention"])
        if kinds != {"full_attention"}:
            raise _refuse(path, "layer_types", sorted(kinds), "full_attention only")
    return None


def _check_fields(config: dict[str, Any], model_type: str, path: Path) -> None:
    known = METADATA | COMMON | FAMILY_FIELDS[model_type]
    for field, value in config.items():
        if field not in known and value is not None:
            raise _refuse(path, field, value, f"the fields of docs/hf.md for {model_type}")
    if config.get("hidden_act", "silu") != "silu":
        raise _refuse(path, "hidden_act", config["hidden_act"], "silu (SwiGLU)")
    architectures = config.get("architectures") or [ARCHITECTURES[model_type]]
    if architectures != [ARCHITECTURES[model_type]]:
        raise _refuse(path, "architectures", architectures, f"[{ARCHITECTURES[model_type]!r}]")


def _vocab_multiple(vocab_size: int) -> int:
    """The largest power of two up to 128 dividing the vocabulary: the embedding keeps
    exactly the checkpoint's rows, and tensor parallelism can still split them evenly."""
    return min(128, vocab_size & -vocab_size)


def model_config_from_hf(directory: Path) -> ModelConfig:
    """Our model config for the checkpoint in ``directory``, or one clear error."""
    path = directory / CONFIG_FILENAME
    config = read_hf_config(directory)
    model_type = config.get("model_type")
    if model_type not in FAMILY_FIELDS:
        raise _refuse(path, "model_type", model_type, SUPPORTED)
    _check_fields(config, model_type, path)
    missing = [field for field in REQUIRED if config.get(field) is None]
    if missing:
        raise UnsupportedConfig(
            f"{path}: {missing[0]} is missing; a {model_type} config.json must set {', '.join(REQUIRED)}"
        )
    heads, d_model = int(config["num_attention_heads"]), int(config["hidden_size"])
    if config.get("head_dim") not in (None, d_model // heads):
        raise _refuse(path, "head_dim", config["head_dim"], f"hidden_size / num_attention_heads = {d_model // heads}")
    theta, scaling = _rope(config, path)
    attention_bias = model_type == "qwen2" or bool(config.get("attention_bias", False))
    vocab_size = int(config["vocab_size"])
    return ModelConfig(
        name=str(config.get("_name_or_path") or f"hf-{model_type}"),
        vocab_size=vocab_size,
        pad_vocab_multiple=_vocab_multiple(vocab_size),
        max_seq_len=int(config["max_position_embeddings"]),
        n_layers=int(config["num_hidden_layers"]),
        d_model=d_model,
        n_heads=heads,
        n_kv_heads=int(config.get("num_key_value_heads") or heads),
        d_ff=int(config["intermediate_size"]),
        norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        rope_scaling=scaling,
        qkv_bias=attention_bias,
        attn_out_bias=model_type == "llama" and attention_bias,
        mlp_bias=bool(config.get("mlp_bias", False)),
        sliding_window=_sliding_window(config, model_type, path),
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        attn_dropout=float(config.get("attention_dropout", 0.0)),
        init_std=float(config.get("initializer_range", 0.02)),
        hf_architecture=ARCHITECTURES[model_type],
    )
