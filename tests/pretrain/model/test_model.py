"""The GPT model: parameter counts, attention masks, causality, and that it learns."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from data_pipeline.command import CONFIG_DIR
from pretrain.config import load_train_config
from pretrain.model.config import Activation, ModelConfig, Norm, Position
from pretrain.model.gpt import GPT, AttentionMode, AttentionSpec, attention_mask, rotary
from pretrain.model.stats import count_parameters, matmul_parameters, training_flops_per_token

MODEL_NAMES = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))


def tiny(**overrides) -> ModelConfig:
    base = dict(
        vocab_size=96, pad_vocab_multiple=32, n_layers=2, d_model=32, n_heads=4, max_seq_len=32, ffn_multiple_of=16
    )
    return ModelConfig(**{**base, **overrides})


def closed_form_parameters(cfg: ModelConfig) -> int:
    """Parameters counted from the shape alone, independently of the modules."""
    d, vocab, head_dim = cfg.d_model, cfg.padded_vocab_size, cfg.d_model // cfg.n_heads
    heads, kv_heads = cfg.n_heads, cfg.n_kv_heads or cfg.n_heads
    if cfg.d_ff is not None:
        ff = cfg.d_ff
    elif cfg.activation == "gelu":
        ff = 4 * d
    else:
        ff = -(-(8 * d // 3) // cfg.ffn_multiple_of) * cfg.ffn_multiple_of
    norm = d * (2 if cfg.norm == "layernorm" and cfg.bias else 1)
    attention = d * head_dim * (2 * heads + 2 * kv_heads) + (head_dim * (heads + 2 * kv_heads) + d) * cfg.bias
    mlp_matrices = 3 if cfg.activation == "swiglu" else 2
    mlp = mlp_matrices * d * ff + ((mlp_matrices - 1) * ff + d) * cfg.bias
    total = vocab * d + cfg.n_layers * (attention + mlp + 2 * norm) + norm
    if cfg.position == "learned":
        total += cfg.max_seq_len * d
    if not cfg.tie_embeddings:
        total += vocab * d
    return total


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_config_matches_its_closed_form_count(name: str) -> None:
    cfg = load_train_config([f"model={name}", "model.vocab_size=32000"]).model
    with torch.device("meta"):
        model = GPT(cfg)
    assert count_parameters(model) == closed_form_parameters(cfg)


def test_ladder_sizes_are_what_their_names_say() -> None:
    expected = {
        "gpt-125m": 125e6,
        "gpt-350m": 350e6,
        "gpt-760m": 760e6,
        "gpt-1.3b": 1.3e9,
        "gpt-2.7b": 2.7e9,
        "gpt-6.7b": 6.7e9,
        "gpt-13b": 13e9,
    }
    for name, size in expected.items():
        cfg = load_train_config([f"model={name}", "model.vocab_size=50257"]).model
        assert abs(closed_form_parameters(cfg) / size - 1) < 0.15, name


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(
            activation=Activation.gelu, norm=Norm.layernorm, position=Position.learned, bias=True, tie_embeddings=False
        ),
        dict(n_kv_heads=1, d_ff=40, norm=Norm.layernorm),
    ],
)
def test_model_variants_count_and_run(options: dict) -> None:
    cfg = tiny(**options)
    model = GPT(cfg)
    assert count_parameters(model) == closed_form_parameters(cfg)
    logits = model(torch.randint(0, 96, (2, 16)))
    assert logits.shape == (2, 16, cfg.padded_vocab_size)
    assert torch.isfinite(logits).all()


def test_matmul_parameters_equal_the_linear_weights() -> None:
    for tie in (True, False):
        cfg = tiny(tie_embeddings=tie)
        model = GPT(cfg)
        linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
        head = cfg.d_model * cfg.padded_vocab_size if tie else 0  # the tied head reuses the embedding
        assert matmul_parameters(cfg) == linear + head
        assert training_flops_per_token(cfg, 32) == 6 * (linear + head) + 12 * cfg.n_layers * cfg.d_model * 32


def test_scaled_init_shrinks_residual_projections() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=256, n_layers=8, d_model=256, n_heads=4)
    model = GPT(cfg)
    assert model.blocks[0].attn.wq.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].attn.wo.weight.std().item() == pytest.approx(0.02 / 4, rel=0.05)
    assert model.blocks[0].mlp.down.weight.std().item() == pytest.approx(0.02 / 4, rel=0.05)


def brute_force_allowed(mode: str, seq: int, prefix: int, docs: list[int] | None) -> torch.Tensor:
    allowed = torch.zeros(seq, seq, dtype=torch.bool)
    for q in range(seq):
        for k in range(seq):
            visible = {"causal": k <= q, "bidirectional": True, "prefix": k <= q or k < prefix}[mode]
            same_doc = docs is None or docs[q] == docs[k]
            allowed[q, k] = visible and same_doc
    return allowed


@pytest.mark.parametrize("mode", list(AttentionMode))
@pytest.mark.parametrize("with_docs", [False, True])
def test_attention_mask_matches_brute_force(mode: AttentionMode, with_docs: bool) -> None:
    docs = [[0, 0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 1, 1, 1, 2, 2]]
    prefix = [3, 6]
    spec = AttentionSpec(
        mode=mode,
        prefix_len=torch.tensor(prefix) if mode is AttentionMode.prefix else None,
        doc_ids=torch.tensor(docs) if with_docs else None,
    )
    mask, is_causal = attention_mask(spec, 8, torch.device("cpu"))
    for row in range(2):
        expected = brute_force_allowed(mode.value, 8, prefix[row], docs[row] if with_docs else None)
        if mask is None:  # SDPA builds the mask itself: causal or none at all
            full = torch.ones(8, 8, dtype=torch.bool)
            assert torch.equal(expected, full.tril() if is_causal else full)
        else:
            assert not is_causal
            assert torch.equal(mask[row if mask.shape[0] > 1 else 0, 0], expected)


def test_rotary_scores_depend_only_on_relative_position() -> None:
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(pq: int, pk: int) -> torch.Tensor:
        return (rotary(q, torch.tensor([pq]), 10000.0) * rotary(k, torch.tensor([pk]), 10000.0)).sum()

    assert torch.allclose(score(5, 2), score(105, 102), atol=1e-4)
    assert not torch.allclose(score(5, 2), score(5, 3), atol=1e-4)


def logits_change(model: GPT, spec: AttentionSpec, changed_from: int) -> torch.Tensor:
    """For each position, whether its logits move when the tokens from ``changed_from`` on change."""
    torch.manual_seed(1)
    tokens = torch.randint(0, 96, (1, 16))
    altered = tokens.clone()
    altered[0, changed_from:] = (altered[0, changed_from:] + 7) % 96
    with torch.no_grad():
        delta = (model(tokens, spec) - model(altered, spec)).abs().amax(dim=-1)[0]
    return delta > 1e-6


@pytest.mark.parametrize("position", list(Position))
def test_causal_positions_never_see_the_future(position: Position) -> None:
    model = GPT(tiny(position=position))
    moved = logits_change(model, AttentionSpec(AttentionMode.causal), changed_from=10)
    assert not moved[:10].any() and moved[10:].all()


def test_bidirectional_positions_see_everything() -> None:
    moved = logits_change(GPT(tiny()), AttentionSpec(AttentionMode.bidirectional), changed_from=10)
    assert moved.all()


def test_prefix_lm_sees_whole_prefix_and_no_later_targets() -> None:
    model = GPT(tiny())
    spec = AttentionSpec(AttentionMode.prefix, prefix_len=torch.tensor([8]))
    moved = logits_change(model, spec, changed_from=6)  # change inside the prefix
    assert moved.all()  # every prefix position sees the whole prefix; targets see it too
    moved = logits_change(model, spec, changed_from=12)  # change among the targets
    assert not moved[:12].any() and moved[12:].all()


def test_document_masking_isolates_documents() -> None:
    model = GPT(tiny())
    docs = torch.tensor([[0] * 6 + [1] * 10])
    spec = AttentionSpec(AttentionMode.bidirectional, doc_ids=docs)
    moved = logits_change(model, spec, changed_from=12)  # inside the second document only
    assert not moved[:6].any() and moved[6:].all()


def test_tiny_model_overfits_one_batch() -> None:
    torch.manual_seed(0)
    model = GPT(tiny())
    tokens = torch.randint(0, 96, (4, 17))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        logits = model(tokens[:, :-1])
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


def test_invalid_shapes_are_rejected_with_the_setting_name() -> None:
    with pytest.raises(ValueError, match="model.n_heads"):
        GPT(tiny(n_heads=5))
    with pytest.raises(ValueError, match="n_kv_heads"):
        GPT(tiny(n_kv_heads=3))
    with pytest.raises(ValueError, match="max_seq_len"):
        GPT(tiny())(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="vocab_size"):
        GPT(dataclasses.replace(tiny(), vocab_size=None))
