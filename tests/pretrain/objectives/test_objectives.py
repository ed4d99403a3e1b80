"""The three objectives: what they mask, how often, and that nothing is lost."""

from __future__ import annotations

import pytest
import torch

from data_pipeline.formats.special_tokens import SpecialTokens
from pretrain.model.gpt import AttentionMode
from pretrain.objectives import ObjectiveConfig, ObjectiveName, build_objective
from pretrain.objectives.mlm import MaskedLM
from pretrain.objectives.span import SpanCorruption

SPECIAL = SpecialTokens.synthetic(vocab_size=1000, num_sentinels=100)
ORDINARY_LOW = 105  # the synthetic layout puts every special id below this


def ordinary_windows(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(ORDINARY_LOW, SPECIAL.vocab_size, (batch, length), generator=generator)


def test_clm_predicts_the_next_token_everywhere() -> None:
    clm = build_objective(ObjectiveConfig(name=ObjectiveName.clm), SPECIAL, seq_len=16, seed=0)
    windows = ordinary_windows(3, clm.window_length())
    batch = clm(windows, torch.arange(3))
    assert batch.input_ids.shape == (3, 16)
    assert torch.equal(batch.labels[:, :-1], batch.input_ids[:, 1:])
    assert batch.loss_mask.all()
    assert batch.attention.mode is AttentionMode.causal


def test_mlm_rates_match_the_configuration() -> None:
    mlm = MaskedLM(SPECIAL, seq_len=200, seed=3)
    windows = ordinary_windows(400, 200)
    batch = mlm(windows, torch.arange(400))
    chosen = batch.loss_mask
    assert chosen.sum(dim=1).eq(30).all()  # exactly 15% of 200 in every sample
    became_mask = (batch.input_ids == SPECIAL.mask_id) & chosen
    unchanged = (batch.input_ids == windows) & chosen
    replaced = ~became_mask & ~unchanged & chosen
    total = chosen.sum().item()
    assert became_mask.sum().item() / total == pytest.approx(0.8, abs=0.01)
    assert replaced.sum().item() / total == pytest.approx(0.1, abs=0.01)
    # a random replacement can draw the original token: 1 in ~895 ordinary ids
    assert unchanged.sum().item() / total == pytest.approx(0.1, abs=0.01)
    assert batch.attention.mode is AttentionMode.bidirectional


def test_mlm_loss_mask_covers_exactly_the_chosen_positions() -> None:
    mlm = MaskedLM(SPECIAL, seq_len=64, seed=0)
    windows = ordinary_windows(50, 64)
    windows[:, ::9] = SPECIAL.eos_id  # special tokens are never chosen
    batch = mlm(windows, torch.arange(50))
    assert torch.equal(batch.labels, windows)
    assert not (batch.loss_mask & (windows == SPECIAL.eos_id)).any()
    assert not ((batch.input_ids != windows) & ~batch.loss_mask).any()  # nothing changes outside the mask
    eligible = (windows != SPECIAL.eos_id).sum(dim=1)
    assert torch.equal(batch.loss_mask.sum(dim=1), torch.round(0.15 * eligible).long())
    random_ids = batch.input_ids[(batch.input_ids != windows) & (batch.input_ids != SPECIAL.mask_id)]
    assert not torch.isin(random_ids, torch.tensor(SPECIAL.all_ids)).any()


def test_noise_depends_on_sample_id_not_on_batching() -> None:
    for name in (ObjectiveName.mlm, ObjectiveName.span):
        objective = build_objective(ObjectiveConfig(name=name), SPECIAL, seq_len=64, seed=7)
        windows = ordinary_windows(4, objective.window_length())
        whole = objective(windows, torch.tensor([10, 11, 12, 13]))
        halves = [objective(windows[i : i + 2], torch.tensor([10 + i, 11 + i])) for i in (0, 2)]
        assert torch.equal(whole.input_ids, torch.cat([h.input_ids for h in halves]))
        other_seed = build_objective(ObjectiveConfig(name=name), SPECIAL, seq_len=64, seed=8)
        assert not torch.equal(whole.input_ids, other_seed(windows, torch.tensor([10, 11, 12, 13])).input_ids)


def split_sample(input_ids: torch.Tensor, labels: torch.Tensor, prefix_len: int) -> tuple[list[int], list[int]]:
    """Undo the label shift: the corrupted input, then the targets."""
    full = torch.cat((input_ids[:1], labels)).tolist()
    return full[:prefix_len], full[prefix_len:]


def reconstruct(inputs: list[int], targets: list[int]) -> list[int]:
    sentinels = set(SPECIAL.sentinel_ids)
    spans: dict[int, list[int]] = {}
    current = None
    for token in targets:
        if token in sentinels:
            current = token
            spans[current] = []
        else:
            spans[current].append(token)
    out: list[int] = []
    for token in inputs:
        out.extend(spans[token] if token in sentinels else [token])
    return out


def test_span_targets_and_input_reconstruct_the_window() -> None:
    span = SpanCorruption(SPECIAL, seq_len=128, seed=0)
    windows = ordinary_windows(20, span.window_length())
    batch = span(windows, torch.arange(20))
    assert batch.input_ids.shape[1] <= 128
    for row in range(20):
        prefix = int(batch.attention.prefix_len[row])
        inputs, targets = split_sample(batch.input_ids[row], batch.labels[row], prefix)
        assert reconstruct(inputs, targets) == windows[row].tolist()
        used = [t for t in inputs if t in set(SPECIAL.sentinel_ids)]
        assert used == list(SPECIAL.sentinel_ids[: len(used)])  # one sentinel per span, in order
        # the loss covers exactly the targets: positions whose next token is a target
        scored = batch.loss_mask[row].nonzero().flatten().tolist()
        assert scored == list(range(prefix - 1, prefix - 1 + len(targets)))


def test_span_statistics_match_the_configuration() -> None:
    span = SpanCorruption(SPECIAL, seq_len=512, seed=1, noise_density=0.15, mean_span_length=3.0)
    windows = ordinary_windows(100, span.window_length())
    batch = span(windows, torch.arange(100))
    noise_tokens = spans = 0
    for row in range(100):
        _, targets = split_sample(batch.input_ids[row], batch.labels[row], int(batch.attention.prefix_len[row]))
        row_spans = sum(t in set(SPECIAL.sentinel_ids) for t in targets)
        spans += row_spans
        noise_tokens += len(targets) - row_spans
    assert noise_tokens / (100 * span.window_length()) == pytest.approx(0.15, abs=0.005)
    assert noise_tokens / spans == pytest.approx(3.0, abs=0.05)
    assert batch.attention.mode is AttentionMode.prefix


def test_span_length_of_every_span_varies_around_the_mean() -> None:
    span = SpanCorruption(SPECIAL, seq_len=512, seed=2)
    batch = span(ordinary_windows(20, span.window_length()), torch.arange(20))
    lengths: list[int] = []
    for row in range(20):
        _, targets = split_sample(batch.input_ids[row], batch.labels[row], int(batch.attention.prefix_len[row]))
        for token in targets:
            if token in set(SPECIAL.sentinel_ids):
                lengths.append(0)
            else:
                lengths[-1] += 1
    assert min(lengths) >= 1 and max(lengths) > 3  # spans are random, not all of the mean length


def test_span_needs_enough_sentinels() -> None:
    few = SpecialTokens.synthetic(vocab_size=1000, num_sentinels=4)
    with pytest.raises(ValueError, match="sentinel"):
        SpanCorruption(few, seq_len=512, seed=0)


@pytest.mark.parametrize("setting", [dict(mask_rate=0.0), dict(mask_token_fraction=0.95, random_token_fraction=0.1)])
def test_mlm_rejects_bad_rates(setting: dict) -> None:
    with pytest.raises(ValueError, match="objective."):
        MaskedLM(SPECIAL, seq_len=16, seed=0, **setting)


def test_document_masking_follows_eos() -> None:
    clm = build_objective(ObjectiveConfig(name=ObjectiveName.clm, document_masking=True), SPECIAL, seq_len=8, seed=0)
    windows = torch.tensor([[200, 201, SPECIAL.eos_id, 300, 301, SPECIAL.eos_id, 400, 401, 402]])
    batch = clm(windows, torch.arange(1))
    assert batch.attention.doc_ids.tolist() == [[0, 0, 0, 1, 1, 1, 2, 2]]
