"""Generation: KV cache, greedy, beam search, sampling filters, stop rules, the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from data_pipeline.command import compose_config
from pretrain.generate import GenerateConfig
from pretrain.generation.beam import Hypotheses
from pretrain.generation.generator import Generator, TextStream
from pretrain.generation.logits import pick_tokens, repetition_penalty, top_k_filter, top_p_filter
from pretrain.generation.settings import GenerationSettings, Strategy
from pretrain.generation.state import DecodingState
from pretrain.inference.loading import InferenceConfig, InferenceModel, load_for_inference
from pretrain.model.config import ModelConfig, Position
from pretrain.model.gpt import GPT

PROMPTS = ["kato mine", "sane hika mine saka sane", "lo"]


@pytest.fixture(scope="module")
def loaded(trained_run: Path) -> InferenceModel:
    return load_for_inference(InferenceConfig(checkpoint=str(trained_run)))


def complete(loaded: InferenceModel, prompts: list[str], strategy: str = "greedy", **settings) -> list[str]:
    settings = {"max_new_tokens": 12, **settings, "strategy": Strategy(strategy)}
    return Generator(loaded.model, loaded.tokenizer, GenerationSettings(**settings)).complete(prompts)


@pytest.mark.parametrize("position", ["rope", "learned"])
def test_cached_decoding_gives_the_logits_of_a_full_forward(position: str) -> None:
    torch.manual_seed(0)
    shape = dict(vocab_size=50, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, max_seq_len=32)
    cfg = ModelConfig(**shape, position=Position(position))
    model = GPT(cfg).eval()
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14]]  # different lengths: left padding
    cached = DecodingState(model, prompts, pad_id=3, max_new_tokens=4, use_cache=True)
    full = DecodingState(model, prompts, pad_id=3, max_new_tokens=4, use_cache=False)
    alone = DecodingState(model, prompts[:1], pad_id=3, max_new_tokens=4, use_cache=True)
    torch.testing.assert_close(cached.logits, full.logits, atol=1e-5, rtol=0)
    for step in range(4):
        tokens = torch.tensor([20 + step, 30 + step, 40 + step])
        torch.testing.assert_close(cached.advance(tokens), full.advance(tokens), atol=1e-5, rtol=0)
        # A padded prompt gets the logits it gets alone.
        torch.testing.assert_close(alone.advance(tokens[:1]), cached.logits[:1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_generation_with_the_cache_equals_generation_without(loaded: InferenceModel, strategy: str) -> None:
    with_cache = complete(loaded, PROMPTS, strategy=strategy, num_beams=3)
    assert with_cache == complete(loaded, PROMPTS, strategy=strategy, num_beams=3, use_cache=False)
    assert any(with_cache)


def test_batched_prompts_complete_as_they_do_alone(loaded: InferenceModel) -> None:
    assert complete(loaded, PROMPTS) == [complete(loaded, [prompt])[0] for prompt in PROMPTS]


def test_greedy_equals_beam_search_with_one_beam(loaded: InferenceModel) -> None:
    assert complete(loaded, PROMPTS) == complete(loaded, PROMPTS, strategy="beam", num_beams=1)


def test_top_k_one_equals_greedy(loaded: InferenceModel) -> None:
    greedy = complete(loaded, PROMPTS, repetition_penalty=1.3)
    assert greedy == complete(loaded, PROMPTS, strategy="sample", top_k=1, temperature=1.7, repetition_penalty=1.3)


def test_sampling_is_seedable(loaded: InferenceModel) -> None:
    settings = dict(strategy="sample", temperature=2.0, max_new_tokens=16)
    first = complete(loaded, PROMPTS, seed=1, **settings)
    assert first == complete(loaded, PROMPTS, seed=1, **settings)
    assert first != complete(loaded, PROMPTS, seed=2, **settings)


def test_stop_strings_end_and_cut_the_completion(loaded: InferenceModel) -> None:
    free = complete(loaded, ["kato mine"], max_new_tokens=20)[0]
    stop = free[4:7]
    stopped = Generator(loaded.model, loaded.tokenizer, GenerationSettings(max_new_tokens=20, stop=[stop]))
    completion_ids = stopped.complete_ids([stopped.prompt_ids("kato mine")])[0]
    assert stopped.complete(["kato mine"]) == [free[: free.index(stop)]]
    assert len(completion_ids) < len(loaded.tokenizer.encode(free))


def test_streamed_pieces_add_up_to_the_text(loaded: InferenceModel) -> None:
    text = "kato é ✓ mine"  # é and ✓ are spelt in byte tokens by this small tokenizer
    stream = TextStream(loaded.tokenizer)
    pieces = [stream.push(token) for token in loaded.tokenizer.encode(text)]
    assert "".join(pieces) == text and not any("\ufffd" in piece for piece in pieces)


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    probs = torch.tensor([[0.1, 0.4, 0.2, 0.3]])
    for p, kept in ((0.35, {1}), (0.65, {1, 3}), (0.75, {1, 3, 2}), (0.95, {0, 1, 2, 3})):
        filtered = top_p_filter(probs.log(), p)
        assert set(torch.isfinite(filtered[0]).nonzero().flatten().tolist()) == kept, p


def test_top_k_and_repetition_penalty() -> None:
    logits = torch.tensor([[1.0, 4.0, 3.0, -2.0]])
    assert torch.isfinite(top_k_filter(logits, 2)).tolist() == [[False, True, True, False]]
    seen = torch.tensor([[False, True, False, True]])
    assert repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, 2.0, 3.0, -4.0]]


@pytest.mark.parametrize("top_k", [0, 2])
def test_sampling_frequencies_match_the_distribution(top_k: int) -> None:
    settings = GenerationSettings(strategy=Strategy.sample, temperature=0.7, top_k=top_k)
    logits = torch.tensor([0.5, 1.5, -0.5, 1.0])
    expected = (logits / settings.temperature).softmax(dim=-1)
    if top_k:
        expected = torch.where(expected >= expected.topk(top_k).values[-1], expected, 0.0)
        expected /= expected.sum()
    draws = 40_000
    scores = top_k_filter(logits.expand(draws, -1) / settings.temperature, top_k)
    tokens = pick_tokens(scores, settings, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(tokens, minlength=4).float() / draws
    torch.testing.assert_close(frequencies, expected, atol=0.01, rtol=0)


def test_beam_hypotheses_stop_only_when_no_beam_can_win() -> None:
    hypotheses = Hypotheses(num_beams=1, length_penalty=1.0)
    hypotheses.add([1, 2], log_prob=-4.0, length=2)  # score -2
    assert hypotheses.done(-5.0, length=3, max_length=10, early_stopping=True)
    # Grown to 10 tokens at no further cost, a beam at -5 would score -0.5 > -2.
    assert not hypotheses.done(-5.0, length=3, max_length=10, early_stopping=False)
    assert hypotheses.done(-25.0, length=3, max_length=10, early_stopping=False)


def test_misspelt_option_is_an_error() -> None:
    assert compose_config("generate", GenerateConfig, ["checkpoint=x", "top_p=0.5"]).top_p == 0.5
    with pytest.raises(Exception, match="tempreature"):
        compose_config("generate", GenerateConfig, ["checkpoint=x", "tempreature=0.5"])


def test_command_writes_jsonl_and_nothing_else(trained_run: Path, tmp_path: Path, run_module) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("kato mine\nsane\n")
    output = tmp_path / "out" / "completions.jsonl"
    args = [f"checkpoint={trained_run}", f"prompts_file={prompts}", f"output_file={output}", "max_new_tokens=6"]
    result = run_module("pretrain.generate", *args, "strategy=sample", "top_p=0.9", "seed=3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [record["prompt"] for record in records] == ["kato mine", "sane"]
    assert all(record["prompt"] + record["completion"] in result.stdout for record in records)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out", "prompts.txt"]
