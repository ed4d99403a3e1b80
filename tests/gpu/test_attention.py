"""On CUDA, the compiled FlexAttention path (forward and backward, which torch 2.13 lacks on CPU)
equals SDPA with the dense mask for every mask kind, in bf16, alone and inside the compiled
model; the CPU suite runs the same checks in fp32, forward only
(tests/pretrain/model/test_flex_attention.py)."""

from __future__ import annotations

import pytest
import torch

from pretrain.model.gpt import AttentionMode
from tests.pretrain.support.attention_checks import (
    KERNEL_TOLERANCE,
    KIND_IDS,
    MASK_KINDS,
    MODEL_TOLERANCE,
    assert_all_close,
    compiled_model_and_eager_sdpa,
    flex_and_reference,
)

CUDA, BF16 = torch.device("cuda"), torch.bfloat16


@pytest.mark.parametrize("mode,with_docs", MASK_KINDS, ids=KIND_IDS)
def test_compiled_flex_forward_and_backward_equal_sdpa_dense_in_bf16(mode: AttentionMode, with_docs: bool) -> None:
    assert_all_close(flex_and_reference(mode, with_docs, CUDA, BF16, backward=True), KERNEL_TOLERANCE[BF16])


def test_compiled_model_forward_and_backward_with_flex_equal_the_eager_model_on_sdpa(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """train.compile=true: the whole model compiled, bf16 autocast, against eager fp32 with
    the dense mask; a second batch with other boundaries must not compile again."""
    pairs = compiled_model_and_eager_sdpa(monkeypatch, CUDA, BF16, backward=True)
    assert_all_close(pairs, MODEL_TOLERANCE[BF16])
