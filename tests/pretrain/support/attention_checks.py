"""Checks of the compiled FlexAttention path against SDPA with the dense mask, written once for
any device: the CPU suite runs them in fp32 (forward only where torch has no CPU backward),
the GPU lane (tests/gpu) in bf16 with the backward pass."""

from __future__ import annotations

import dataclasses
import itertools
from contextlib import nullcontext
from typing import Callable, Optional

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention.flex_attention import flex_attention

import pretrain.model.gpt as model_module
from pretrain.model.config import ModelConfig
from pretrain.model.flex_attention import flex_attend
from pretrain.model.gpt import GPT, AttentionMode, AttentionSpec, attention_mask, flex_block_mask

# Six mask kinds: causal (CLM), bidirectional (MLM), prefix-LM (span corruption), each alone
# or confined to documents (objective.document_masking=true).
MASK_KINDS = list(itertools.product(AttentionMode, [False, True]))
KIND_IDS = [f"{mode.value}{'+docs' if docs else ''}" for mode, docs in MASK_KINDS]
# More than one 128-wide block with the last one partial; grouped-query attention (4 query
# heads over 2 key/value heads); head_dim 16, the smallest the CUDA kernels take.
BATCH, SEQ, HEADS, KV_HEADS, HEAD_DIM = 2, 150, 4, 2, 16
# The model whose attention has those shapes, so its compiled kernels are the ones above.
TINY = ModelConfig(
    vocab_size=96,
    pad_vocab_multiple=32,
    n_layers=2,
    d_model=HEADS * HEAD_DIM,
    n_heads=HEADS,
    n_kv_heads=KV_HEADS,
    max_seq_len=SEQ,
    ffn_multiple_of=16,
)
# torch 2.13 refuses inputs that require gradients on CPU (flex_attention._validate_device).
NO_CPU_BACKWARD = "FlexAttention does not support backward on CPU"
# Largest difference allowed, as a fraction of the largest reference value: of one kernel,
# and of a whole model (bf16 rounds every matrix product's inputs, not only attention's).
KERNEL_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}
MODEL_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 5e-2}
CPU = torch.device("cpu")


def spec_for(mode: AttentionMode, with_docs: bool, seed: int = 0, device: torch.device = CPU) -> AttentionSpec:
    """A batch's attention: random document boundaries and prefix lengths drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    boundaries = torch.rand(BATCH, SEQ, generator=generator) < 0.03
    prefix_len = torch.randint(1, SEQ, (BATCH,), generator=generator)
    return AttentionSpec(
        mode=mode,
        prefix_len=prefix_len.to(device) if mode is AttentionMode.prefix else None,
        doc_ids=boundaries.long().cumsum(dim=1).to(device) if with_docs else None,
    )


def qkv(device: torch.device, dtype: torch.dtype, requires_grad: bool, seed: int = 1) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shapes = [(BATCH, HEADS, SEQ, HEAD_DIM), (BATCH, KV_HEADS, SEQ, HEAD_DIM), (BATCH, KV_HEADS, SEQ, HEAD_DIM)]
    return [torch.randn(shape, generator=generator).to(device, dtype).requires_grad_(requires_grad) for shape in shapes]


def sdpa_dense(q: Tensor, k: Tensor, v: Tensor, spec: AttentionSpec) -> Tensor:
    """The reference: SDPA with the dense boolean mask, in fp32."""
    mask, is_causal = attention_mask(spec, SEQ, q.device)
    return F.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), attn_mask=mask, is_causal=is_causal, enable_gqa=True
    )


def with_gradients(run: Callable[[list[Tensor]], Tensor], inputs: list[Tensor], upstream: Tensor) -> list[Tensor]:
    """The output of ``run`` and the gradients of ``inputs`` for the ``upstream`` gradient."""
    out = run(inputs)
    grads = torch.autograd.grad(out, inputs, upstream.to(out.dtype))
    return [out, *grads]


def flex_and_reference(
    mode: AttentionMode, with_docs: bool, device: torch.device, dtype: torch.dtype, backward: bool
) -> list[tuple[str, Tensor, Tensor]]:
    """``(name, compiled FlexAttention, SDPA dense)`` for the output and, with ``backward``,
    the gradients of q, k and v. Raises torch's NotImplementedError where it has no backward."""
    spec = spec_for(mode, with_docs, device=device)
    inputs = qkv(device, dtype, requires_grad=backward)
    flex = lambda t: flex_attend(*t, flex_block_mask(spec, SEQ, device), enable_gqa=True)  # noqa: E731
    dense = lambda t: sdpa_dense(*t, spec)  # noqa: E731
    if not backward:
        with torch.no_grad():
            return [("output", flex(inputs), dense(inputs))]
    upstream = torch.randn(BATCH, HEADS, SEQ, HEAD_DIM, generator=torch.Generator().manual_seed(2)).to(device)
    reference_inputs = [t.detach().float().requires_grad_() for t in inputs]
    names = ["output", "grad q", "grad k", "grad v"]
    return list(zip(names, with_gradients(flex, inputs, upstream), with_gradients(dense, reference_inputs, upstream)))


def assert_all_close(pairs: list[tuple[str, Tensor, Tensor]], tolerance: float) -> None:
    for name, actual, expected in pairs:
        error = (actual.float() - expected.float()).abs().max() / expected.float().abs().max()
        assert error <= tolerance, f"{name}: max difference {error:.2e} of the largest value"


def skip_without_backward(device: torch.device) -> None:
    """Skip, naming torch's limitation, where it has no FlexAttention backward on this device
    (CPU in torch 2.13): the GPU lane checks the backward pass instead. Asked of the uncompiled
    function, which checks first: a compiled call that fails while traced would leave Dynamo
    running parts of flex_attention's frame uncompiled for the rest of the process."""
    if device.type != "cpu":
        return
    probe = torch.zeros(1, 1, 16, 16, requires_grad=True)
    try:
        flex_attention(probe, probe, probe)
    except NotImplementedError as error:
        if NO_CPU_BACKWARD not in str(error):
            raise
        pytest.skip(f"torch {torch.__version__}: {NO_CPU_BACKWARD}; tests/gpu/test_attention.py checks it on CUDA")


def compiled_model_and_eager_sdpa(
    monkeypatch: pytest.MonkeyPatch, device: torch.device, dtype: torch.dtype, backward: bool, n_layers: int = 1
) -> list[tuple[str, Tensor, Tensor]]:
    """The tiny model under ``torch.compile`` (what ``train.compile=true`` runs) with its
    attention on FlexAttention, against the eager model on SDPA with the dense mask, fp32, for
    two batches with other document boundaries and prefix lengths; the second must reuse the
    first one's compiled graph. Prefix-LM with documents, the kind that reads both per-sample
    tensors. Pairs of (name, compiled, eager): each batch's logits and, with ``backward``, the
    embedding's gradient."""
    cfg = dataclasses.replace(TINY, n_layers=n_layers)
    eager = GPT(cfg, seed=0).to(device).eval()
    compiled = torch.compile(GPT(cfg, seed=0).to(device).eval())
    tokens = torch.randint(0, cfg.vocab_size, (BATCH, SEQ), generator=torch.Generator().manual_seed(3)).to(device)

    # One function object for each choice: the compiled graph guards on the one it saw.
    dispatch = {True: lambda *args: True, False: lambda *args: False}

    def run(model: torch.nn.Module, spec: AttentionSpec, flex: bool, autocast: Optional[torch.dtype]) -> list[Tensor]:
        monkeypatch.setattr(model_module, "use_flex_attention", dispatch[flex])
        model.zero_grad(set_to_none=True)
        cast = nullcontext() if autocast is None else torch.autocast(device.type, autocast)
        with torch.set_grad_enabled(backward), cast:
            logits = model(tokens, spec)
            if not backward:
                return [logits]
            logits.float().square().mean().backward()
        return [logits, model.embed.tokens.weight.grad]

    pairs = []
    for seed in (0, 1):
        spec = spec_for(AttentionMode.prefix, with_docs=True, seed=seed, device=device)
        expected = run(eager, spec, flex=False, autocast=None)
        # The first batch compiles; another compile for the second would raise.
        stance = "default" if seed == 0 else "fail_on_recompile"
        with torch.compiler.set_stance(stance):
            actual = run(compiled, spec, flex=True, autocast=None if dtype is torch.float32 else dtype)
        pairs += zip([f"batch {seed} logits", f"batch {seed} grad embedding"], actual, expected)
    return pairs
