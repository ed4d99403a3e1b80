"""Parameter counts and training FLOPs per token, the numbers behind MFU."""

from __future__ import annotations

from torch import nn

from pretrain.model.config import Activation, ModelConfig


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (a tied embedding counts once)."""
    return sum(p.numel() for p in model.parameters())


def matmul_parameters(cfg: ModelConfig) -> int:
    """Weights that take part in a matrix multiply for every token: the blocks' linears and
    the output projection (tied or not), but not embedding lookups or norms."""
    attn = cfg.d_model * cfg.head_dim * (2 * cfg.n_heads + 2 * cfg.kv_heads)
    mlp = (3 if cfg.activation is Activation.swiglu else 2) * cfg.d_model * cfg.ffn_dim
    return cfg.n_layers * (attn + mlp) + cfg.d_model * cfg.padded_vocab_size


def training_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Forward + backward FLOPs per trained token, counted as in the PaLM paper (Chowdhery
    et al. 2022, appendix B): 6 per matmul weight, plus 12 · layers · attention width · seq for
    the score and value products (causal masking not discounted)."""
    attention_width = cfg.n_heads * cfg.head_dim
    return 6.0 * matmul_parameters(cfg) + 12.0 * cfg.n_layers * attention_width * seq_len
