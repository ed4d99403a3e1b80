"""A decoder-only GPT in plain torch, written once for every parallel layout.

Every linear and the token embedding come from a :class:`LayerFactory`. The default makes
ordinary ``nn.Linear``/``nn.Embedding``; the tensor-parallel factory makes column-, row- and
vocabulary-parallel versions of the same shapes, and the attention and MLP only ask it how
many heads and how much width land on this rank. The pipeline lays out the same
``Embedding``, ``Block`` and ``OutputHead`` modules as stages.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ContextManager, NamedTuple, Optional, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint, noop_context_fn

from pretrain.choices import Choice
from pretrain.model.config import Activation, ModelConfig, Norm, Position, RopeScaling
from pretrain.model.flex_attention import BlockMask, block_mask, flex_attend
from pretrain.model.fused_linear import fused_linear, with_adapter
from pretrain.model.init import materialize
from pretrain.model.loss import token_losses

if TYPE_CHECKING:  # the cache module imports this one
    from pretrain.generation.kv_cache import KVCache, LayerCache


class Linear(nn.Linear):
    """``nn.Linear`` that adds its LoRA adapter's update when it has one (``pretrain.model.lora``)."""

    def forward(self, x: Tensor) -> Tensor:
        return with_adapter(self, x, F.linear(x, self.weight, self.bias))


class SequenceSplit(Protocol):
    """Context parallelism (``pretrain.parallel.context.ContextParallel``): each rank holds
    1/size of every sequence, and attention reads the keys and values of all of it."""

    size: int

    def gather_keys_values(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]: ...


class LayerFactory:
    """Builds the layers that tensor parallelism splits; this one builds them whole.

    Column layers read an input that went through :meth:`gather_input` once, however many
    of them read it (q, k and v; gate and up): under tensor parallelism that entry is the
    one place their backward communicates."""

    tp_size: int = 1
    # Set on a factory instance when the sequence is split over a context-parallel group.
    context: Optional[SequenceSplit] = None

    def column(self, in_features: int, out_features: int, bias: bool) -> nn.Module:
        """A linear whose output features may be split across tensor-parallel ranks."""
        return Linear(in_features, out_features, bias=bias)

    def row(self, in_features: int, out_features: int, bias: bool) -> nn.Module:
        """A linear whose input features may be split; its output is complete on every rank
        (or, with sequence parallelism, this rank's sequence shard of it)."""
        return Linear(in_features, out_features, bias=bias)

    def embedding(self, num_embeddings: int, dim: int) -> nn.Module:
        return nn.Embedding(num_embeddings, dim)

    def norm(self, cfg: ModelConfig) -> nn.Module:
        return make_norm(cfg)

    def dropout(self, p: float) -> nn.Module:
        """Dropout of the activations between layers (embedding and residual dropout)."""
        return nn.Dropout(p)

    def split_rng(self) -> ContextManager[None]:
        """Where dropout of values split across tensor-parallel ranks (attention's, on this
        rank's heads) draws its masks; whole values draw from the default generator."""
        return contextlib.nullcontext()

    # torch.utils.checkpoint's ``context_fn`` for a recomputed block: nothing around it.
    checkpoint_contexts = staticmethod(noop_context_fn)

    def gather_input(self, x: Tensor) -> Tensor:
        """The input of column layers, (batch, seq, d_model), as they need it."""
        return x

    def scatter_sequence(self, x: Tensor) -> Tensor:
        """This rank's part of a (..., seq, features) value every rank computed whole, in the
        layout row layers give their outputs."""
        return x

    def tied_logits(self, x: Tensor, weight: Tensor) -> Tensor:
        """Logits from the (possibly vocabulary-split) embedding matrix."""
        return F.linear(self.gather_input(x), weight)

    def token_losses(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Per-position cross-entropy, (batch, seq), from logits laid out as this factory's."""
        return token_losses(logits, labels)


DENSE = LayerFactory()


class AttentionMode(Choice):
    causal = "causal"  # CLM: each position sees itself and earlier ones
    bidirectional = "bidirectional"  # MLM: every position sees every position
    prefix = "prefix"  # prefix-LM: bidirectional inside the prefix, causal after it


@dataclass
class AttentionSpec:
    """What the objective asks of attention for one batch."""

    mode: AttentionMode = AttentionMode.causal
    # (batch,) prefix lengths, for AttentionMode.prefix.
    prefix_len: Optional[Tensor] = None
    # (batch, seq) document index of each position: attention never crosses documents.
    doc_ids: Optional[Tensor] = None
    # (local seq,) under context parallelism: the global positions of this rank's tokens,
    # which attend to the whole sequence's keys (doc_ids and prefix_len stay whole).
    query_positions: Optional[Tensor] = None


def needs_mask(spec: AttentionSpec) -> bool:
    """Whether attention needs more than SDPA's built-in causal or no mask (its causal mask
    is for a square of queries and keys, not a rank's queries against the whole sequence)."""
    local_causal = spec.query_positions is not None and spec.mode is not AttentionMode.bidirectional
    return spec.doc_ids is not None or spec.mode is AttentionMode.prefix or local_causal


def attention_mask(spec: AttentionSpec, seq_len: int, device: torch.device) -> tuple[Optional[Tensor], bool]:
    """``(mask, is_causal)`` for SDPA. The mask is boolean (batch, 1, query, key), True where
    a query may attend to a key; ``seq_len`` counts the keys (the whole sequence), the queries
    are all of them or ``spec.query_positions``. It is None when SDPA needs none (plain causal
    or plain bidirectional attention), which keeps the fused kernels available."""
    if not needs_mask(spec):
        return None, spec.mode is AttentionMode.causal and spec.query_positions is None
    if spec.mode is AttentionMode.prefix and spec.prefix_len is None:
        raise ValueError("prefix attention needs prefix_len")
    keys = torch.arange(seq_len, device=device)
    queries = keys if spec.query_positions is None else spec.query_positions.to(device)
    allowed = (keys[None, :] <= queries[:, None])[None]  # causal, (1, query, key)
    if spec.mode is AttentionMode.bidirectional:
        allowed = torch.ones_like(allowed)
    elif spec.mode is AttentionMode.prefix:
        key_in_prefix = keys[None, :] < spec.prefix_len.to(device)[:, None]  # (batch, key)
        allowed = allowed | key_in_prefix[:, None, :]
    if spec.doc_ids is not None:
        allowed = allowed & (spec.doc_ids[:, queries, None] == spec.doc_ids[:, None, :])
    return allowed[:, None], False


def use_flex_attention(spec: AttentionSpec, device: torch.device, dropout: float) -> bool:
    """On CUDA, masks beyond plain causal go to FlexAttention's block masks, which keep a
    fused kernel; CPU keeps SDPA (FlexAttention has no CPU backward in torch 2.13), and so
    does attention dropout, which FlexAttention lacks. Plain causal and bidirectional
    attention need no mask and stay on SDPA's flash kernel."""
    return device.type == "cuda" and needs_mask(spec) and dropout == 0.0


def flex_block_mask(spec: AttentionSpec, seq_len: int, device: torch.device) -> BlockMask:
    """The block mask allowing the pairs :func:`attention_mask` allows."""
    prefix_len = spec.prefix_len if spec.mode is AttentionMode.prefix else None
    on_device = lambda t: None if t is None else t.to(device)  # noqa: E731
    causal = spec.mode is not AttentionMode.bidirectional
    return block_mask(
        causal, on_device(prefix_len), on_device(spec.doc_ids), seq_len, device, on_device(spec.query_positions)
    )


def attention_inputs(
    spec: AttentionSpec, seq_len: int, device: torch.device, dropout: float
) -> tuple[Optional[Tensor | BlockMask], bool]:
    """``(mask, is_causal)`` for a whole sequence (no cache): FlexAttention's block mask where
    :func:`use_flex_attention` picks it, SDPA's otherwise. ``dropout``: the attention
    dropout this pass applies (0 in evaluation)."""
    if use_flex_attention(spec, device, dropout):
        return flex_block_mask(spec, seq_len, device), False
    return attention_mask(spec, seq_len, device)


def rope_frequencies(head_dim: int, theta: float, scaling: Optional[RopeScaling], device: torch.device) -> Tensor:
    """(head_dim / 2,) rotation frequencies, with Llama 3's scaling when given: wavelengths
    longer than ``original / low_freq_factor`` are divided by ``factor``, those shorter than
    ``original / high_freq_factor`` kept, and the ones between blended linearly in
    ``original / wavelength``."""
    half = head_dim // 2
    inv_freq = theta ** (-torch.arange(half, device=device, dtype=torch.float32) / half)
    if scaling is None:
        return inv_freq
    wavelength = 2 * math.pi / inv_freq
    original = scaling.original_max_seq_len
    blend = (original / wavelength - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
    blended = (1 - blend) * inv_freq / scaling.factor + blend * inv_freq
    long_waves = wavelength > original / scaling.low_freq_factor
    short_waves = wavelength < original / scaling.high_freq_factor
    return torch.where(long_waves, inv_freq / scaling.factor, torch.where(short_waves, inv_freq, blended))


class RotaryTables(NamedTuple):
    """Rotary cos and sin, fp32, (seq, head_dim) or (batch, 1, seq, head_dim): computed once
    per forward and shared by every layer (and by queries and keys)."""

    cos: Tensor
    sin: Tensor


def rotary_tables(
    positions: Tensor, head_dim: int, theta: float, scaling: Optional[RopeScaling] = None
) -> RotaryTables:
    """The tables for ``positions``, (seq,) or (batch, seq)."""
    inv_freq = rope_frequencies(head_dim, theta, scaling, positions.device)
    angles = positions.to(torch.float32)[..., None] * inv_freq  # (..., seq, half)
    if angles.dim() == 3:
        angles = angles[:, None]  # per-sample positions broadcast over heads
    angles = torch.cat((angles, angles), dim=-1)
    return RotaryTables(angles.cos(), angles.sin())


def apply_rotary(x: Tensor, tables: RotaryTables) -> Tensor:
    """Rotary position embedding in the rotate-half layout (the one Hugging Face Llama uses);
    x: (batch, heads, seq, head_dim)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * tables.cos.to(x.dtype) + rotated * tables.sin.to(x.dtype)


def rotary(x: Tensor, positions: Tensor, theta: float, scaling: Optional[RopeScaling] = None) -> Tensor:
    """:func:`apply_rotary` with tables made for this call alone."""
    return apply_rotary(x, rotary_tables(positions, x.shape[-1], theta, scaling))


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm is Norm.rmsnorm:
        return nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layers: LayerFactory) -> None:
        super().__init__()
        if cfg.n_heads % layers.tp_size or cfg.kv_heads % layers.tp_size:
            raise ValueError(
                f"model.n_heads={cfg.n_heads} and n_kv_heads={cfg.kv_heads} "
                f"must be divisible by parallel.tp={layers.tp_size}"
            )
        self.local_heads = cfg.n_heads // layers.tp_size
        self.local_kv_heads = cfg.kv_heads // layers.tp_size
        self.head_dim = cfg.head_dim
        self.rope_theta = cfg.rope_theta if cfg.position is Position.rope else None
        self.rope_scaling = cfg.active_rope_scaling
        self.dropout = cfg.attn_dropout
        self.layers = layers
        qkv_bias = cfg.has_bias(cfg.qkv_bias)
        self.wq = layers.column(cfg.d_model, cfg.n_heads * cfg.head_dim, qkv_bias)
        self.wk = layers.column(cfg.d_model, cfg.kv_heads * cfg.head_dim, qkv_bias)
        self.wv = layers.column(cfg.d_model, cfg.kv_heads * cfg.head_dim, qkv_bias)
        self.wo = layers.row(cfg.n_heads * cfg.head_dim, cfg.d_model, cfg.has_bias(cfg.attn_out_bias))

    def fused_linears(self) -> tuple[nn.Module, ...]:
        """The linears whose parameters the forward pass reads for one GEMM (see
        ``pretrain.model.fused_linear``), instead of calling them."""
        return self.wq, self.wk, self.wv

    def _split_heads(self, x: Tensor, heads: int) -> Tensor:
        batch, seq, _ = x.shape
        return x.view(batch, seq, heads, self.head_dim).transpose(1, 2)

    def rotary_tables(self, positions: Tensor) -> Optional[RotaryTables]:
        """None when the model has no rotary positions."""
        if self.rope_theta is None:
            return None
        return rotary_tables(positions, self.head_dim, self.rope_theta, self.rope_scaling)

    def forward(
        self,
        x: Tensor,
        rope: Optional[RotaryTables],
        mask: Optional[Tensor | BlockMask],
        is_causal: bool,
        cache: Optional[LayerCache] = None,
    ) -> Tensor:
        x = self.layers.gather_input(x)  # once for q, k and v
        q, k, v = fused_linear(x, self.fused_linears())
        q = self._split_heads(q, self.local_heads)
        k, v = self._split_heads(k, self.local_kv_heads), self._split_heads(v, self.local_kv_heads)
        if rope is not None:
            # Rotated q and k are new tensors: a copy of v lets the projections' output go
            # instead of staying alive, as v's storage, until the backward pass.
            q, k, v = apply_rotary(q, rope), apply_rotary(k, rope), v.contiguous()
        if cache is not None:
            k, v = cache.append(k, v)
        if self.layers.context is not None:  # the whole sequence's keys for this rank's queries
            k, v = self.layers.context.gather_keys_values(k, v)
        if isinstance(mask, BlockMask):
            out = flex_attend(q, k, v, mask, enable_gqa=self.local_kv_heads != self.local_heads)
        else:
            out = self._sdpa(q, k, v, mask, is_causal)
        batch, _, seq, _ = out.shape
        return self.wo(out.transpose(1, 2).reshape(batch, seq, self.local_heads * self.head_dim))

    def _sdpa(self, q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], is_causal: bool) -> Tensor:
        dropout = self.dropout if self.training else 0.0
        with self.layers.split_rng() if dropout else contextlib.nullcontext():  # this rank's heads' masks
            return F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                is_causal=is_causal,
                dropout_p=dropout,
                enable_gqa=self.local_kv_heads != self.local_heads,
            )


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, layers: LayerFactory) -> None:
        super().__init__()
        if cfg.ffn_dim % layers.tp_size:
            raise ValueError(f"the MLP width {cfg.ffn_dim} must be divisible by parallel.tp={layers.tp_size}")
        self.gated = cfg.activation is Activation.swiglu
        self.layers = layers
        bias = cfg.has_bias(cfg.mlp_bias)
        self.up = layers.column(cfg.d_model, cfg.ffn_dim, bias)
        self.gate = layers.column(cfg.d_model, cfg.ffn_dim, bias) if self.gated else None
        self.down = layers.row(cfg.ffn_dim, cfg.d_model, bias)

    def fused_linears(self) -> tuple[nn.Module, ...]:
        """The linears whose parameters the forward pass reads for one GEMM (see
        ``pretrain.model.fused_linear``), instead of calling them: gate and up, when gated."""
        return (self.gate, self.up) if self.gate is not None else ()

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers.gather_input(x)  # once for gate and up
        if self.gate is not None:
            gate, up = fused_linear(x, self.fused_linears())
            hidden = F.silu(gate) * up
        else:
            hidden = F.gelu(self.up(x), approximate="tanh")
        return self.down(hidden)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig, layers: LayerFactory = DENSE) -> None:
        super().__init__()
        self.attn_norm = layers.norm(cfg)
        self.attn = Attention(cfg, layers)
        self.mlp_norm = layers.norm(cfg)
        self.mlp = MLP(cfg, layers)
        self.dropout = layers.dropout(cfg.residual_dropout)

    def forward(
        self,
        x: Tensor,
        positions: Tensor,
        mask: Optional[Tensor | BlockMask],
        is_causal: bool,
        cache: Optional[LayerCache] = None,
        rope: Optional[RotaryTables] = None,
    ) -> Tensor:
        """``rope``: the tables for ``positions`` when the caller has them (a whole model
        computes them once for all its blocks); otherwise the block computes its own."""
        if rope is None:
            rope = self.attn.rotary_tables(positions)
        x = x + self.dropout(self.attn(self.attn_norm(x), rope, mask, is_causal, cache))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


class Embedding(nn.Module):
    """Token embedding, plus learned absolute positions when rotary embeddings are off."""

    def __init__(self, cfg: ModelConfig, layers: LayerFactory = DENSE) -> None:
        super().__init__()
        self.tokens = layers.embedding(cfg.padded_vocab_size, cfg.d_model)
        self.positions = nn.Embedding(cfg.max_seq_len, cfg.d_model) if cfg.position is Position.learned else None
        self.dropout = layers.dropout(cfg.embed_dropout)
        self.layers = layers

    def forward(self, input_ids: Tensor, positions: Tensor) -> Tensor:
        x = self.tokens(input_ids)
        if self.positions is not None:
            x = x + self.layers.scatter_sequence(self.positions(positions))
        return self.dropout(x)


class OutputHead(nn.Module):
    """Final norm and the projection to vocabulary logits; with tied embeddings the
    projection borrows the embedding matrix, passed in by the caller."""

    def __init__(self, cfg: ModelConfig, layers: LayerFactory = DENSE) -> None:
        super().__init__()
        self.norm = layers.norm(cfg)
        self.proj = None if cfg.tie_embeddings else layers.column(cfg.d_model, cfg.padded_vocab_size, False)
        self.layers = layers

    def forward(self, x: Tensor, tied_weight: Optional[Tensor] = None) -> Tensor:
        x = self.norm(x)
        if self.proj is None:
            return self.layers.tied_logits(x, tied_weight)
        return self.proj(self.layers.gather_input(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig, layers: LayerFactory = DENSE, seed: int = 0) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.layers = layers
        with torch.device("meta"):  # allocated once, by materialize (pretrain/model/init.py)
            self.embed = Embedding(cfg, layers)
            self.blocks = nn.ModuleList(Block(cfg, layers) for _ in range(cfg.n_layers))
            self.head = OutputHead(cfg, layers)
        # Recompute each block's activations in the backward pass instead of storing them.
        self.activation_checkpointing = False
        self.reset_parameters(seed)

    def reset_parameters(self, seed: int = 0) -> None:
        materialize(self, "", self.cfg, seed)

    def forward(
        self,
        input_ids: Tensor,
        attention: Optional[AttentionSpec] = None,
        positions: Optional[Tensor] = None,
        cache: Optional[KVCache] = None,
    ) -> Tensor:
        """Logits of shape (batch, seq, padded vocab). With a ``cache`` (causal decoding),
        ``input_ids`` are the tokens after the cached ones, whose keys and values it keeps."""
        spec = attention or AttentionSpec()
        # Under context parallelism input_ids are this rank's share of each sequence.
        seq_len = input_ids.shape[1] * (1 if self.layers.context is None else self.layers.context.size)
        past = 0 if cache is None else cache.length
        if past + seq_len > self.cfg.max_attention_span:
            raise ValueError(
                f"sequence of {past + seq_len} tokens exceeds the model's {self.cfg.max_attention_span} positions "
                f"(model.max_seq_len={self.cfg.max_seq_len}, model.sliding_window={self.cfg.sliding_window})"
            )
        if positions is None:
            positions = spec.query_positions
        if positions is None:
            positions = torch.arange(past, past + seq_len, device=input_ids.device)
        if cache is None:
            mask, is_causal = attention_inputs(
                spec, seq_len, input_ids.device, self.cfg.attn_dropout if self.training else 0.0
            )
        else:
            mask, is_causal = cache.extend(spec, seq_len, input_ids.device)
        x = self.embed(input_ids, positions)
        rope = self.blocks[0].attn.rotary_tables(positions) if self.blocks else None
        for index, block in enumerate(self.blocks):
            if self.activation_checkpointing and self.training:
                x = checkpoint(
                    block,
                    x,
                    positions,
                    mask,
                    is_causal,
                    None,
                    rope,
                    use_reentrant=False,
                    context_fn=self.layers.checkpoint_contexts,
                )
            else:
                x = block(x, positions, mask, is_causal, None if cache is None else cache.layers[index], rope)
        tied = self.embed.tokens.weight if self.cfg.tie_embeddings else None
        return self.head(x, tied)
