"""FlexAttention's block masks attend exactly as SDPA with the dense mask, for every mask
kind, and the model and its pipeline stages pick FlexAttention on CUDA and SDPA on CPU."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import pretrain.model as model_module
from pretrain.flex_attention import flex_attend
from pretrain.model import GPT, AttentionMode, AttentionSpec, attention_mask, flex_block_mask, use_flex_attention
from pretrain.model_config import ModelConfig
from pretrain.parallel.pipeline import BlockStage

BATCH, SEQ = 2, 150  # more than one 128-wide block, the last one partial
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")  # CPU runs the reference
CPU, CUDA = torch.device("cpu"), torch.device("cuda")
MASK_KINDS = list(itertools.product(AttentionMode, [False, True]))


def spec_for(mode: AttentionMode, with_docs: bool) -> AttentionSpec:
    generator = torch.Generator().manual_seed(0)
    boundaries = torch.rand(BATCH, SEQ, generator=generator) < 0.03
    return AttentionSpec(
        mode=mode,
        prefix_len=torch.tensor([37, 140]) if mode is AttentionMode.prefix else None,
        doc_ids=boundaries.long().cumsum(dim=1) if with_docs else None,
    )


@pytest.mark.parametrize("mode,with_docs", MASK_KINDS, ids=[f"{m.value}{'+docs' if d else ''}" for m, d in MASK_KINDS])
@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_flex_forward_equals_sdpa_with_the_dense_mask(mode: AttentionMode, with_docs: bool, kv_heads: int) -> None:
    generator = torch.Generator().manual_seed(1)
    q = torch.randn(BATCH, 4, SEQ, 16, generator=generator)
    k, v = (torch.randn(BATCH, kv_heads, SEQ, 16, generator=generator) for _ in range(2))
    spec = spec_for(mode, with_docs)
    mask, is_causal = attention_mask(spec, SEQ, CPU)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=kv_heads != 4)
    actual = flex_attend(q, k, v, flex_block_mask(spec, SEQ, CPU), enable_gqa=kv_heads != 4)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


TINY = ModelConfig(vocab_size=96, pad_vocab_multiple=32, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, max_seq_len=SEQ, ffn_multiple_of=16)


def counting_flex_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Dispatch as on CUDA from now on; the list grows by one per FlexAttention call."""
    calls: list[int] = []
    monkeypatch.setattr(model_module, "use_flex_attention", lambda *args: True)
    monkeypatch.setattr(model_module, "flex_attend", lambda *args, **kw: calls.append(1) or flex_attend(*args, **kw))
    return calls


def test_model_with_flex_attention_gives_the_sdpa_logits(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = TINY
    model = GPT(cfg, seed=0).eval()
    tokens = torch.randint(0, 96, (BATCH, SEQ), generator=torch.Generator().manual_seed(2))
    spec = spec_for(AttentionMode.prefix, with_docs=True)
    with torch.no_grad():
        expected = model(tokens, spec)
        flex_calls = counting_flex_calls(monkeypatch)
        actual = model(tokens, spec)
    assert len(flex_calls) == cfg.n_layers
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode,with_docs", MASK_KINDS, ids=[f"{m.value}{'+docs' if d else ''}" for m, d in MASK_KINDS])
def test_dispatch_flex_on_cuda_for_masks_sdpa_on_cpu(mode: AttentionMode, with_docs: bool) -> None:
    spec = spec_for(mode, with_docs)
    needs_a_mask = with_docs or mode is AttentionMode.prefix  # plain causal/bidirectional keep SDPA's flash kernel
    assert use_flex_attention(spec, CUDA, dropout=0.0) == needs_a_mask
    assert not use_flex_attention(spec, CPU, dropout=0.0)
    assert not use_flex_attention(spec, CUDA, dropout=0.1)  # FlexAttention has no dropout


def test_pipeline_block_stage_dispatches_like_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipeline stage builds no dense mask where the model would not: SDPA with the dense
    mask on CPU, a FlexAttention block mask (and the same output) as on CUDA."""
    spec = spec_for(AttentionMode.prefix, with_docs=True)
    stage = BlockStage(TINY, model_module.DENSE, seed=0, index=0, mode=spec.mode, uses_doc_ids=True).eval()
    inputs = (torch.randn(BATCH, SEQ, TINY.d_model, generator=torch.Generator().manual_seed(3)), spec.prefix_len, spec.doc_ids)
    dense_masks = []
    monkeypatch.setattr(model_module, "attention_mask", lambda *args: dense_masks.append(1) or attention_mask(*args))
    with torch.no_grad():
        expected = stage(inputs)[0]
        assert dense_masks == [1]  # CPU: SDPA with the dense mask
        flex_calls = counting_flex_calls(monkeypatch)
        actual = stage(inputs)[0]
    assert dense_masks == [1] and flex_calls == [1]
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
