"""Activation memory: the bytes autograd keeps for the backward pass, tensor by tensor.

Per transformer layer we count what each operation saves, in the accounting of Korthikanti
et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", section 4).
With their model (LayerNorm, GELU MLP of width 4h, dropout, unfused attention, 16-bit) the
count is their 34·s·b·h + 5·a·s²·b bytes per layer, sbh·(10 + 24/t + 5as/(ht)) with tensor
parallelism t and sbh/t·(34 + 5as/h) with sequence parallelism; tests/pretrain/planning/test_plan.py
checks both. Our default model saves a different set (RMSNorm, SwiGLU, GQA, fused
attention that keeps no s² matrix), which the same count covers.

Context parallelism (cp ranks share each sequence) divides every per-token tensor by cp: a
rank keeps the activations of its s/cp tokens only, but for the keys and values, which
attention gathers and keeps for the whole sequence (``gathered_kv_bytes``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pretrain.model.config import Activation, ModelConfig, Norm

FP32 = 4
BOOL = 1  # bytes of a boolean mask's element
DROPOUT_MASK = BOOL


@dataclass(frozen=True)
class ActivationSetting:
    """How one micro-batch is laid out on a rank."""

    seq_len: int
    micro_batch: int
    element_bytes: int  # of the activations: 2 in bf16/fp16, 4 in fp32
    tp: int = 1
    # Megatron's sequence parallelism splits the replicated parts (norms, dropout, linear
    # inputs) along the sequence too (parallel.sequence_parallel).
    sequence_parallel: bool = False
    # Megatron keeps the sequence shard of a column-parallel layer's input and gathers it again
    # for the backward; our layers (pretrain/parallel/tensor.py) keep the gathered input whole.
    sharded_linear_inputs: bool = True
    # Fused attention (SDPA's flash/efficient kernels) keeps the output and a logsumexp per
    # row instead of the (seq × seq) attention probabilities.
    fused_attention: bool = True
    # Context-parallel ranks sharing each sequence: a rank holds seq_len / cp of its tokens.
    cp: int = 1
    # Dense (query × key) masks per layer that attention keeps for its backward, in the
    # activation dtype: CPU's SDPA turns a boolean mask (document masking, prefix-LM, a cp
    # rank's queries against the whole sequence) into such a float mask in every layer. 1 when
    # the micro-batch shares one (plain causal under cp), micro_batch when each sample has
    # its own; 0 on CUDA, whose FlexAttention keeps a block mask of negligible size.
    dense_masks: int = 0

    @property
    def tokens(self) -> float:
        """Tokens of one micro-batch on this rank."""
        return self.seq_len / self.cp * self.micro_batch


def layer_activation_bytes(cfg: ModelConfig, at: ActivationSetting) -> float:
    """Bytes one transformer block saves for its backward pass, for one micro-batch."""
    tokens = at.tokens
    e, t = at.element_bytes, at.tp
    replicated = 1 / t if at.sequence_parallel else 1.0  # per-token tensors of width h that tp does not split
    h = cfg.d_model
    q, kv, f = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim, cfg.ffn_dim
    # Each norm keeps its input; torch's RMSNorm is composed of ops that also keep x·rstd.
    per_norm = h * e * (2 if cfg.norm is Norm.rmsnorm else 1)
    norms = 2 * per_norm * replicated
    linear_inputs = (
        2 * h * e * (replicated if at.sharded_linear_inputs else 1.0) + (q / t) * e
    )  # QKV and MLP input (the norms' outputs), output projection's input
    # What the score and value products keep; under cp the keys and values of the whole
    # sequence (gathered), cp times this rank's own.
    qkv = (q + 2 * kv * at.cp) / t * e
    if at.fused_attention:
        core = (q / t) * e + (cfg.n_heads / t) * FP32  # output and logsumexp per head
    else:
        probs = cfg.n_heads / t * at.seq_len  # per token: one row of scores per head, over the whole sequence
        core = probs * e + (probs * (DROPOUT_MASK + e) if cfg.attn_dropout > 0 else 0)
    if cfg.activation is Activation.swiglu:
        mlp = 4 * f / t * e  # gate (silu's input), silu(gate), up, and their product (down's input)
    else:
        mlp = 2 * f / t * e  # gelu's input and output (down's input)
    dropout_masks = 2 * h * DROPOUT_MASK * replicated if cfg.residual_dropout > 0 else 0
    return tokens * (norms + linear_inputs + qkv + core + mlp + dropout_masks) + at.dense_masks * mask_pairs(at) * e


def mask_pairs(at: ActivationSetting) -> float:
    """(query, key) pairs of one mask: this rank's queries against the whole sequence."""
    return at.seq_len / at.cp * at.seq_len


def layer_input_bytes(cfg: ModelConfig, at: ActivationSetting) -> float:
    """What a checkpointed (recomputed) layer keeps: its input."""
    return at.tokens * cfg.d_model * at.element_bytes / (at.tp if at.sequence_parallel else 1)


def gathered_kv_bytes(cfg: ModelConfig, at: ActivationSetting) -> float:
    """With cp > 1, one layer's keys and values of the whole sequence (this rank's kv heads),
    all-gathered from the cp group for its attention (Llama 3, section 3.3.2). Attention keeps
    them for its backward (counted per layer); beside them a layer's backward holds their
    gradients in rank order for the reduce-scatter, a transient of the size of this."""
    if at.cp == 1:
        return 0.0
    return 2 * at.seq_len * at.micro_batch * cfg.kv_heads * cfg.head_dim / at.tp * at.element_bytes


def head_activation_bytes(cfg: ModelConfig, at: ActivationSetting) -> float:
    """The final norm, the logits (vocabulary split across tp) and the loss: its fp32 copy
    of the logits, the saved log-softmax and, when the backward starts, its gradient."""
    tokens = at.tokens
    e = at.element_bytes
    # The norm's input (and x·rstd) on the rank's tokens, its output as the logits' input.
    on_shard = 1 / at.tp if at.sequence_parallel else 1.0
    output = 1 / at.tp if at.sequence_parallel and at.sharded_linear_inputs else 1.0
    norm = cfg.d_model * e * ((2 if cfg.norm is Norm.rmsnorm else 1) * on_shard + output)
    vocab = cfg.padded_vocab_size / at.tp
    per_logit = e + 2 * FP32 + (FP32 if e != FP32 else 0)
    return tokens * (norm + vocab * per_logit)


@dataclass(frozen=True)
class StageActivations:
    """Activation bytes of one pipeline stage's rank, with and without recomputation."""

    stored: float  # the layers' saved tensors of all micro-batches in flight, plus the head
    recomputed: float  # with activation checkpointing: layer inputs, plus one chunk rebuilt or the head


def stage_activations(
    cfg: ModelConfig, at: ActivationSetting, layers: int, in_flight: int, has_head: bool, checkpoint_interval: int = 1
) -> StageActivations:
    """``in_flight``: micro-batches whose activations a stage holds at once (1 without a
    pipeline; up to pp − stage under 1F1B). With recomputation every ``checkpoint_interval``
    layers keep one input, and the backward rebuilds one such chunk at a time."""
    head = head_activation_bytes(cfg, at) if has_head else 0.0
    per_layer = layer_activation_bytes(cfg, at)
    # The layer in flight's whole-sequence K/V gradients, and the boolean mask the layers share.
    transient = gathered_kv_bytes(cfg, at)
    masks = at.dense_masks * mask_pairs(at) * BOOL
    stored = in_flight * (layers * per_layer + masks) + head + transient
    chunks = -(-layers // checkpoint_interval)
    # The backward of a rebuilt chunk also holds the gradients of its widest tensors (the
    # MLP's) next to the rebuilt activations; by then the head's tensors are freed.
    gradients = 2 * cfg.ffn_dim / at.tp * at.element_bytes * at.tokens
    working = min(checkpoint_interval, layers) * per_layer + gradients + transient
    recomputed = in_flight * (chunks * layer_input_bytes(cfg, at) + masks) + max(working, head)
    return StageActivations(stored=stored, recomputed=recomputed)
