"""Rotary cos/sin are computed once per forward and shared by every layer, with the same
results as each layer computing its own (the pipeline stages still do)."""

from __future__ import annotations

import pytest
import torch

import pretrain.model.gpt as model_module
from pretrain.model.config import ModelConfig, RopeScaling
from pretrain.model.gpt import GPT, AttentionSpec


def rope_model(scaling: RopeScaling) -> GPT:
    cfg = ModelConfig(
        vocab_size=96,
        pad_vocab_multiple=32,
        n_layers=3,
        d_model=32,
        n_heads=4,
        max_seq_len=64,
        ffn_multiple_of=16,
        rope_scaling=scaling,
    )
    return GPT(cfg, seed=3).eval()


def per_layer_forward(model: GPT, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The forward pass as it was: every block computes its rotary tables from the positions."""
    x = model.embed(tokens, positions)
    for block in model.blocks:
        x = block(x, positions, None, True)
    return model.head(x, model.embed.tokens.weight if model.cfg.tie_embeddings else None)


@pytest.mark.parametrize(
    "scaling", [RopeScaling(), RopeScaling(factor=8.0, original_max_seq_len=16)], ids=["plain", "llama3-scaled"]
)
@pytest.mark.parametrize("per_sample_positions", [False, True])
def test_tables_are_computed_once_and_give_the_same_logits(
    scaling: RopeScaling, per_sample_positions: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = rope_model(scaling)
    tokens = torch.randint(0, 96, (2, 20), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(20)
    if per_sample_positions:  # generation's padded prompts count positions per row
        positions = torch.stack((positions, (positions - 3).clamp(min=0)))
    calls = []
    original = model_module.rope_frequencies
    monkeypatch.setattr(model_module, "rope_frequencies", lambda *a: calls.append(a) or original(*a))
    with torch.no_grad():
        logits = model(tokens, AttentionSpec(), positions)
        assert len(calls) == 1  # not once per layer, nor once for queries and again for keys
        expected = per_layer_forward(model, tokens, positions)
    assert len(calls) == 1 + model.cfg.n_layers
    assert torch.equal(logits, expected)
