"""Evaluation: perplexity and bits per byte, multiple choice, ROUGE/BLEU, the command."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data_pipeline.formats.token_shards import TokenShard, find_shards
from pretrain.evaluation.multiple_choice import Question, accuracy, contexts_with_shots
from pretrain.evaluation.open_ended import rouge_and_bleu
from pretrain.evaluation.run import evaluate_model
from pretrain.evaluation.scoring import continuation_log_probs
from pretrain.evaluation.tasks import TaskConfig, TaskType
from pretrain.generation.generator import Generator
from pretrain.generation.settings import GenerationSettings
from pretrain.inference.loading import InferenceConfig, InferenceModel, load_for_inference


@pytest.fixture(scope="module")
def loaded(trained_run: Path) -> InferenceModel:
    return load_for_inference(InferenceConfig(checkpoint=str(trained_run)))


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def direct_nll(model, ids: list[int]) -> float:
    """Summed next-token NLL of one sequence, straight from the model."""
    tensor = torch.tensor([ids])
    with torch.no_grad():
        logits = model(tensor[:, :-1])
    return float(F.cross_entropy(logits[0], tensor[0, 1:], reduction="sum"))


def test_perplexity_of_token_shards_is_the_models_loss(loaded: InferenceModel, text_shards: Path) -> None:
    task = TaskConfig(type=TaskType.perplexity, path=str(text_shards), seq_len=64, limit=5)
    metrics = evaluate_model(loaded.model, loaded.tokenizer, [task], batch_size=2)
    stream = TokenShard(find_shards(text_shards, "val")[0]).tokens.astype(np.int64)
    windows = [stream[start : start + 65].tolist() for start in range(0, 5 * 64, 64)]
    nll = sum(direct_nll(loaded.model, window) for window in windows)
    num_bytes = sum(len(loaded.tokenizer.decode(window[1:]).encode()) for window in windows)
    key = task.label
    assert metrics[f"{key}/tokens"] == 5 * 64
    assert metrics[f"{key}/loss"] == pytest.approx(nll / (5 * 64), rel=1e-5)
    assert metrics[f"{key}/ppl"] == pytest.approx(math.exp(nll / (5 * 64)), rel=1e-5)
    assert metrics[f"{key}/bits_per_byte"] == pytest.approx(nll / math.log(2) / num_bytes, rel=1e-5)


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_perplexity_of_a_text_file(loaded: InferenceModel, tmp_path: Path, suffix: str) -> None:
    texts = ["kato mine saka sane hika mine saka sane.", "lo pe di fu ga hi jo ba ce."]
    path = tmp_path / f"texts{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, [{"text": text} for text in texts])
    else:
        path.write_text(texts[0])
        texts = texts[:1]
    task = TaskConfig(type=TaskType.perplexity, path=str(path), seq_len=8)
    metrics = evaluate_model(loaded.model, loaded.tokenizer, [task], batch_size=4)
    eos = loaded.tokenizer.special.eos_id
    streams = [[eos] + loaded.tokenizer.encode(text) for text in texts]
    nll = sum(direct_nll(loaded.model, s[start : start + 9]) for s in streams for start in range(0, len(s) - 1, 8))
    assert metrics[f"{task.label}/loss"] == pytest.approx(nll / sum(len(s) - 1 for s in streams), rel=1e-5)
    assert metrics[f"{task.label}/bits_per_byte"] == pytest.approx(nll / math.log(2) / len("".join(texts)), rel=1e-5)


def test_batched_choice_scores_equal_one_by_one(loaded: InferenceModel) -> None:
    encode = loaded.tokenizer.encode
    eos = [loaded.tokenizer.special.eos_id]
    requests = [
        (eos + encode("kato mine"), encode(" saka")),
        (eos + encode("sa"), encode(" ne hika mine")),
        (eos, encode("lo")),
    ]
    batched = continuation_log_probs(loaded.model, requests, batch_size=3, pad_id=3)
    for (context, continuation), score in zip(requests, batched):
        with torch.no_grad():
            log_probs = loaded.model(torch.tensor([context + continuation])).log_softmax(-1)[0]
        expected = sum(float(log_probs[len(context) - 1 + i, token]) for i, token in enumerate(continuation))
        assert score == pytest.approx(expected, abs=1e-4)


def test_accuracy_and_length_normalized_accuracy() -> None:
    questions = [Question("q1", ("a", "bbbb"), 1), Question("q2", ("cc", "d"), 0)]
    # q1: the long right choice loses on the sum, wins per character; q2 is right either way.
    metrics = accuracy([[-2.0, -4.0], [-1.0, -3.0]], questions)
    assert metrics == {"acc": 0.5, "acc_norm": 1.0, "examples": 2.0}


def test_few_shot_contexts_never_show_the_question_itself() -> None:
    questions = [Question(f"q{i}", ("x", "y"), i % 2) for i in range(4)]
    task = TaskConfig(type=TaskType.multiple_choice, path="unused", num_fewshot=2)
    contexts = contexts_with_shots(questions, questions, task)
    assert contexts == contexts_with_shots(questions, questions, task)  # reproducible
    for question, context in zip(questions, contexts):
        shots = context.split("\n\n")
        assert len(shots) == 3 and shots[-1] == question.context
        assert all(shot.split()[0] != question.context for shot in shots[:-1])


def test_multiple_choice_task(loaded: InferenceModel, tmp_path: Path) -> None:
    generator = Generator(loaded.model, loaded.tokenizer, GenerationSettings(max_new_tokens=3))
    contexts = ["kato mine saka", "sane hika", "lo pe", "mine kato", "saka sane"]
    # the word the model goes on with (a context it would end at once gives none)
    likely = {
        context: completion.split()[0]
        for context, completion in zip(contexts, generator.complete(contexts))
        if completion.split()
    }
    assert len(likely) >= 2
    records = [{"context": context, "choices": ["zz", word], "label": 1} for context, word in likely.items()]
    path = write_jsonl(tmp_path / "mc.jsonl", records)
    task = TaskConfig(type=TaskType.multiple_choice, path=str(path), num_fewshot=1)
    metrics = evaluate_model(loaded.model, loaded.tokenizer, [task])
    assert metrics[f"{task.label}/examples"] == len(records)
    assert 0 <= metrics[f"{task.label}/acc_norm"] <= 1 and metrics[f"{task.label}/acc"] >= 2 / 3


def test_rouge_and_bleu() -> None:
    metrics = rouge_and_bleu(["the cat sat on the mat", "a b c d"], [["the cat sat on the mat"], ["x", "a b c d"]])
    assert metrics["rouge1"] == metrics["rougeL"] == metrics["rougeLsum"] == 1.0
    assert metrics["bleu"] == pytest.approx(100.0)
    partial = rouge_and_bleu(["the cat sat"], [["the cat ran away"]])
    assert partial["rouge1"] == pytest.approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))
    assert partial["rouge2"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))


def test_generation_task_scores_its_own_completions_perfectly(loaded: InferenceModel, tmp_path: Path) -> None:
    task = TaskConfig(type=TaskType.generation, path="", name="echo")
    task.generation.max_new_tokens = 8
    prompts = ["kato mine", "sane hika mine"]
    completions = Generator(loaded.model, loaded.tokenizer, task.generation).complete(prompts)
    records = [{"prompt": prompt, "reference": completion.strip()} for prompt, completion in zip(prompts, completions)]
    task.path = str(write_jsonl(tmp_path / "gen.jsonl", records))
    loaded.model.train()
    metrics = evaluate_model(loaded.model, loaded.tokenizer, [task], batch_size=2)
    assert loaded.model.training  # handed back in the mode it came in
    loaded.model.eval()
    assert metrics["echo/rouge1"] == metrics["echo/rouge2"] == 1.0
    assert metrics["echo/bleu"] == pytest.approx(100.0)


def test_command_writes_results_and_a_table(trained_run: Path, tmp_path: Path, run_module) -> None:
    mc = write_jsonl(tmp_path / "mc.jsonl", [{"context": "kato", "choices": [" mine", " saka"], "label": 0}])
    text = trained_run / "tokenizer" / "tokenizer_meta.json"  # any text will do
    tasks = f"tasks=[{{type: perplexity, path: '{text}'}}, {{type: multiple_choice, path: '{mc}'}}]"
    output = tmp_path / "results.json"
    result = run_module("pretrain.evaluate", f"checkpoint={trained_run}", tasks, f"output_file={output}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    results = json.loads(output.read_text())
    assert results["step"] == 12 and set(results["metrics"]) >= {
        "perplexity_tokenizer_meta/ppl",
        "multiple_choice_mc/acc",
    }
    assert re.search(r"^multiple_choice_mc +acc +[01]\.0000$", result.stdout, re.MULTILINE)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mc.jsonl", "results.json"]
