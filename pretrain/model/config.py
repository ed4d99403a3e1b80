"""The model's shape and options: one dataclass, also the Hydra schema of ``configs/model/``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from pretrain.choices import Choice


class Activation(Choice):
    swiglu = "swiglu"
    gelu = "gelu"


class Norm(Choice):
    rmsnorm = "rmsnorm"
    layernorm = "layernorm"


class Position(Choice):
    rope = "rope"
    learned = "learned"


@dataclass
class RopeScaling:
    """Llama 3's rotary frequency scaling (Meta, "The Llama 3 Herd of Models", 2024): long
    wavelengths are stretched by ``factor``, short ones kept, the band between interpolated."""

    # None: plain rotary embeddings (Llama 3.1 has 8, Llama 3.2 has 32).
    factor: Optional[float] = None
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    # The context length the unscaled frequencies were trained for.
    original_max_seq_len: int = 8192


@dataclass
class ModelConfig:
    name: str = "tiny"
    # None: taken from the tokenizer and rounded up to ``pad_vocab_multiple`` (fast matmuls,
    # and divisible by the tensor-parallel degree).
    vocab_size: Optional[int] = None
    pad_vocab_multiple: int = 128
    max_seq_len: int = 2048
    n_layers: int = 12
    d_model: int = 768
    n_heads: int = 12
    # Grouped-query attention: None means one kv head per query head (plain multi-head).
    n_kv_heads: Optional[int] = None
    # MLP hidden width; None derives it: 4·d for GELU, 8/3·d rounded up to ffn_multiple_of
    # for SwiGLU (same parameter count as a 4·d GELU MLP).
    d_ff: Optional[int] = None
    ffn_multiple_of: int = 256
    activation: Activation = Activation.swiglu
    norm: Norm = Norm.rmsnorm
    norm_eps: float = 1e-5
    position: Position = Position.rope
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling = field(default_factory=RopeScaling)
    # Biases of every linear and LayerNorm; the three below override it per projection when
    # set (Qwen2 has biases on the query, key and value projections only).
    bias: bool = False
    qkv_bias: Optional[bool] = None
    attn_out_bias: Optional[bool] = None
    mlp_bias: Optional[bool] = None
    # Mistral's sliding-window attention span; sequences longer than it are refused (within
    # the window, sliding-window attention is plain causal attention).
    sliding_window: Optional[int] = None
    # The Hugging Face class an imported model exports back to (pretrain.hf); None: Llama.
    hf_architecture: Optional[str] = None
    tie_embeddings: bool = True
    embed_dropout: float = 0.0
    residual_dropout: float = 0.0
    attn_dropout: float = 0.0
    init_std: float = 0.02
    # GPT-2 / Megatron: residual output projections start with std / sqrt(2 · n_layers), so
    # the residual stream's variance does not grow with depth.
    scaled_init: bool = True

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    def has_bias(self, projection: Optional[bool]) -> bool:
        """A per-projection bias setting, or ``bias`` where it is unset."""
        return self.bias if projection is None else projection

    @property
    def active_rope_scaling(self) -> Optional[RopeScaling]:
        """``rope_scaling`` when it is on (its factor set), else None."""
        return self.rope_scaling if self.rope_scaling.factor is not None else None

    @property
    def max_attention_span(self) -> int:
        """The longest sequence the model attends over exactly."""
        return min(self.max_seq_len, self.sliding_window or self.max_seq_len)

    @property
    def ffn_dim(self) -> int:
        if self.d_ff is not None:
            return self.d_ff
        if self.activation is Activation.gelu:
            return 4 * self.d_model
        width = int(8 * self.d_model / 3)
        return self.ffn_multiple_of * math.ceil(width / self.ffn_multiple_of)

    @property
    def padded_vocab_size(self) -> int:
        if self.vocab_size is None:
            raise ValueError("model.vocab_size is unset: set it, or let training take it from the tokenizer metadata")
        return self.pad_vocab_multiple * math.ceil(self.vocab_size / self.pad_vocab_multiple)

    def validate(self) -> None:
        """Raise one clear error for the first inconsistent setting."""
        if self.d_model % self.n_heads:
            raise ValueError(f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}")
        if self.head_dim % 2 and self.position is Position.rope:
            raise ValueError(f"rotary embeddings need an even head dim, got {self.head_dim}; change model.n_heads")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"model.n_heads={self.n_heads} is not divisible by model.n_kv_heads={self.kv_heads}")
        for name in ("n_layers", "d_model", "n_heads", "max_seq_len", "pad_vocab_multiple"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ValueError(f"model.sliding_window must be positive or null, got {self.sliding_window}")
        scaling = self.active_rope_scaling
        if scaling is not None and not (scaling.factor > 0 and 0 < scaling.low_freq_factor < scaling.high_freq_factor):
            raise ValueError(
                "model.rope_scaling needs factor > 0 and 0 < low_freq_factor < high_freq_factor, got "
                f"{scaling.factor}, {scaling.low_freq_factor}, {scaling.high_freq_factor}"
            )
        for name in ("embed_dropout", "residual_dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")
