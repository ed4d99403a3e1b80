"""The compiled FlexAttention path attends exactly as SDPA with the dense mask, for every mask
kind, inside a compiled model too; one compile serves batches with other document boundaries;
the mask is built once per micro-batch, not per layer; and the model and its pipeline stages
pick FlexAttention on CUDA and SDPA on CPU. The backward pass, which torch 2.13 has on CUDA
only, is checked by the GPU lane (tests/gpu/test_attention.py) with the same helpers."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch._dynamo.utils import counters
from torch.nn.attention.flex_attention import flex_attention

import pretrain.model.flex_attention as flex_module
import pretrain.model.gpt as model_module
from pretrain.model.flex_attention import flex_attend
from pretrain.model.gpt import GPT, AttentionMode, attention_mask, flex_block_mask, use_flex_attention
from pretrain.parallel.pipeline import BlockStage, StageMasks
from tests.pretrain.support.attention_checks import (
    BATCH,
    KERNEL_TOLERANCE,
    KIND_IDS,
    MASK_KINDS,
    MODEL_TOLERANCE,
    SEQ,
    TINY,
    assert_all_close,
    compiled_model_and_eager_sdpa,
    flex_and_reference,
    qkv,
    sdpa_dense,
    skip_without_backward,
    spec_for,
)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
FP32 = torch.float32
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")  # the counting tests
THREE_LAYERS = dataclasses.replace(TINY, n_layers=3)


@pytest.mark.parametrize("mode,with_docs", MASK_KINDS, ids=KIND_IDS)
def test_compiled_flex_forward_equals_sdpa_with_the_dense_mask(mode: AttentionMode, with_docs: bool) -> None:
    assert_all_close(flex_and_reference(mode, with_docs, CPU, FP32, backward=False), KERNEL_TOLERANCE[FP32])


@pytest.mark.parametrize("mode,with_docs", MASK_KINDS, ids=KIND_IDS)
def test_compiled_flex_backward_equals_sdpa_with_the_dense_mask(mode: AttentionMode, with_docs: bool) -> None:
    skip_without_backward(CPU)
    assert_all_close(flex_and_reference(mode, with_docs, CPU, FP32, backward=True), KERNEL_TOLERANCE[FP32])


def test_one_compile_serves_batches_with_other_document_boundaries() -> None:
    """Document ids and prefix lengths reach the kernel as tensors (graph inputs), so new
    boundaries are new data for the same compiled graph, not a recompile."""
    q, k, v = qkv(CPU, FP32, requires_grad=False)
    specs = [spec_for(AttentionMode.prefix, with_docs=True, seed=seed) for seed in range(4)]
    assert len({tuple(spec.doc_ids.flatten().tolist()) for spec in specs}) == 4
    assert len({tuple(spec.prefix_len.tolist()) for spec in specs}) == 4
    with torch.no_grad():
        attend = lambda spec: flex_attend(q, k, v, flex_block_mask(spec, SEQ, CPU), enable_gqa=True)  # noqa: E731
        attend(specs[0])  # compiles, unless an earlier test compiled this configuration
        graphs = counters["stats"]["unique_graphs"]
        with torch.compiler.set_stance("fail_on_recompile"):  # a recompile would raise
            outputs = [attend(spec) for spec in specs[1:]]
    assert counters["stats"]["unique_graphs"] == graphs
    for spec, output in zip(specs[1:], outputs):
        assert_all_close([("output", output, sdpa_dense(q, k, v, spec))], KERNEL_TOLERANCE[FP32])


def test_compiled_model_with_flex_attention_equals_the_eager_model_on_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    """What train.compile=true runs (forward only: no FlexAttention backward on CPU)."""
    assert_all_close(compiled_model_and_eager_sdpa(monkeypatch, CPU, FP32, backward=False), MODEL_TOLERANCE[FP32])


def counting(monkeypatch: pytest.MonkeyPatch, module, name: str) -> list[int]:
    """The list grows by one per call of ``module.name``."""
    calls: list[int] = []
    original = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *args, **kw: calls.append(1) or original(*args, **kw))
    return calls


def dispatch_as_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Block masks as on CUDA, run by FlexAttention's uncompiled reference: these tests count
    masks, and the model's (transposed) q and k would cost a compile of their own."""
    monkeypatch.setattr(model_module, "use_flex_attention", lambda *args: True)
    monkeypatch.setattr(
        model_module,
        "flex_attend",
        lambda q, k, v, mask, enable_gqa: flex_attention(q, k, v, block_mask=mask, enable_gqa=enable_gqa),
    )


def test_model_builds_one_block_mask_per_forward_for_all_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = THREE_LAYERS
    model = GPT(cfg, seed=0).eval()
    tokens = torch.randint(0, cfg.vocab_size, (BATCH, SEQ), generator=torch.Generator().manual_seed(2))
    spec = spec_for(AttentionMode.prefix, with_docs=True)
    with torch.no_grad():
        expected = model(tokens, spec)
        dispatch_as_on_cuda(monkeypatch)
        masks, kernels = (
            counting(monkeypatch, flex_module, "create_block_mask"),
            counting(monkeypatch, model_module, "flex_attend"),
        )
        actual = model(tokens, spec)
    assert len(masks) == 1 and len(kernels) == cfg.n_layers
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode,with_docs", MASK_KINDS, ids=KIND_IDS)
def test_dispatch_flex_on_cuda_for_masks_sdpa_on_cpu(mode: AttentionMode, with_docs: bool) -> None:
    spec = spec_for(mode, with_docs)
    needs_a_mask = with_docs or mode is AttentionMode.prefix  # plain causal/bidirectional keep SDPA's flash kernel
    assert use_flex_attention(spec, CUDA, dropout=0.0) == needs_a_mask
    assert not use_flex_attention(spec, CPU, dropout=0.0)
    assert not use_flex_attention(spec, CUDA, dropout=0.1)  # FlexAttention has no dropout


def pipeline_stage(masks: StageMasks) -> list[BlockStage]:
    """The blocks of a one-stage pipeline, as build_pipeline makes them: one StageMasks shared."""
    return [
        BlockStage(
            THREE_LAYERS, model_module.DENSE, seed=0, index=i, mode=AttentionMode.prefix, uses_doc_ids=True, masks=masks
        ).eval()
        for i in range(THREE_LAYERS.n_layers)
    ]


def run_stage(stage: list[BlockStage], inputs: tuple) -> torch.Tensor:
    """What DeepSpeed's PipelineModule does with a stage's layers: each gets the tuple the one before returned."""
    for block in stage:
        inputs = block(inputs)
    return inputs[0]


def stage_inputs(seed: int) -> tuple:
    spec = spec_for(AttentionMode.prefix, with_docs=True, seed=seed)
    hidden = torch.randn(BATCH, SEQ, TINY.d_model, generator=torch.Generator().manual_seed(seed))
    return hidden, spec.prefix_len, spec.doc_ids


def whole_model_blocks(inputs: tuple) -> torch.Tensor:
    """The same blocks inside a whole GPT, on CPU's SDPA with the dense mask."""
    hidden, prefix_len, doc_ids = inputs
    spec = model_module.AttentionSpec(mode=AttentionMode.prefix, prefix_len=prefix_len, doc_ids=doc_ids)
    mask, is_causal = model_module.attention_inputs(spec, SEQ, CPU, 0.0)
    for block in GPT(THREE_LAYERS, seed=0).eval().blocks:
        hidden = block(hidden, torch.arange(SEQ), mask, is_causal)
    return hidden


@pytest.mark.parametrize("kernel", ["sdpa", "flex"])
def test_pipeline_stage_builds_the_mask_once_per_micro_batch(kernel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once for all the blocks of a stage and for their recomputation in the backward pass
    (which hands them detached views); again for the next micro-batch or after an in-place
    write. SDPA with the dense mask on CPU, the block mask as on CUDA; the output is the
    whole GPT's."""
    first, second = stage_inputs(seed=0), stage_inputs(seed=1)
    with torch.no_grad():
        expected = whole_model_blocks(first)
        if kernel == "flex":
            dispatch_as_on_cuda(monkeypatch)
            builds = counting(monkeypatch, flex_module, "create_block_mask")
        else:
            builds = counting(monkeypatch, model_module, "attention_mask")
        stage = pipeline_stage(StageMasks(size=2))
        actual = run_stage(stage, first)
        recomputed = run_stage(stage, tuple(t.detach() for t in first))
        assert len(builds) == 1
        run_stage(stage, second)
        assert len(builds) == 2
        first[2].add_(0)  # a new version of the document ids
        run_stage(stage, first)
        assert len(builds) == 3
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(recomputed, actual)


def test_stage_masks_keep_the_last_micro_batches() -> None:
    masks = StageMasks(size=2)
    specs = [spec_for(AttentionMode.causal, with_docs=True, seed=seed) for seed in range(3)]
    built = [masks(spec, SEQ, CPU, 0.0)[0] for spec in specs]
    assert masks(specs[2], SEQ, CPU, 0.0)[0] is built[2] and masks(specs[1], SEQ, CPU, 0.0)[0] is built[1]
    assert masks(specs[0], SEQ, CPU, 0.0)[0] is not built[0]  # evicted: built again, equal
    assert torch.equal(masks(specs[0], SEQ, CPU, 0.0)[0], built[0])
    assert torch.equal(built[0], attention_mask(specs[0], SEQ, CPU)[0])
