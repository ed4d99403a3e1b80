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


def choice_log_likelihood(loaded: InferenceModel, context: str, choice: str) -> float:
    """log p(" " + choice | EOS + context), straight from the model: the choice's tokens are
    those of the whole text after the context's (a space joins the two)."""
    context_ids = [loaded.tokenizer.special.eos_id] + loaded.tokenizer.encode(context)
    ids = [loaded.tokenizer.special.eos_id] + loaded.tokenizer.encode(context + " " + choice)
    with torch.no_grad():
        log_probs = loaded.model(torch.tensor([ids[:-1]]))[0].log_softmax(-1)
    return sum(float(log_probs[position - 1, ids[position]]) for position in range(len(context_ids), len(ids)))


def known_answers(loaded: InferenceModel, contexts: list[str], choices: list[list[str]]) -> list[dict]:
    """Questions whose labels make the expected accuracy known: the first half labelled with
    the choice the model scores highest, the second half with the one it scores lowest."""
    records = []
    for number, (context, options) in enumerate(zip(contexts, choices)):
        scores = [choice_log_likelihood(loaded, context, option) for option in options]
        pick = max if number < len(contexts) // 2 else min
        records.append(
            {"context": context, "choices": options, "label": pick(range(len(options)), key=scores.__getitem__)}
        )
    return records


def expected_accuracy(loaded: InferenceModel, records: list[dict], per_character: bool) -> float:
    right = 0
    for record in records:
        scores = [choice_log_likelihood(loaded, record["context"], choice) for choice in record["choices"]]
        if per_character:
            scores = [score / len(choice) for score, choice in zip(scores, record["choices"])]
        right += max(range(len(scores)), key=scores.__getitem__) == record["label"]
    return right / len(records)


MC_CONTEXTS = ["kato mine saka", "sane hika", "lo pe", "mine kato", "saka sane", "hika lo"]
MC_CHOICES = [["mine", "zz", "kato saka"], ["lo", "pe di", "q"], ["saka", "mine", "xx yy"]] * 2


def test_multiple_choice_accuracy_is_the_hand_count(loaded: InferenceModel, tmp_path: Path) -> None:
    records = known_answers(loaded, MC_CONTEXTS, MC_CHOICES)
    task = TaskConfig(type=TaskType.multiple_choice, path=str(write_jsonl(tmp_path / "mc.jsonl", records)))
    metrics = evaluate_model(loaded.model, loaded.tokenizer, [task], batch_size=4)
    assert metrics[f"{task.label}/examples"] == len(records)
    assert metrics[f"{task.label}/acc"] == 0.5  # right on the first half, wrong on the second, by construction
    assert metrics[f"{task.label}/acc_norm"] == expected_accuracy(loaded, records, per_character=True)


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's default tokenization: lower case, runs of ASCII letters and digits."""
    return re.findall(r"[a-z0-9]+", text.lower())


def f_measure(overlap: int, predicted: int, reference: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / predicted, overlap / reference
    return 2 * precision * recall / (precision + recall)


def rouge1(prediction: str, reference: str) -> float:
    """Unigram overlap F-measure (Lin 2004), counts clipped."""
    predicted, wanted = rouge_tokens(prediction), rouge_tokens(reference)
    overlap = sum(min(predicted.count(word), wanted.count(word)) for word in set(predicted))
    return f_measure(overlap, len(predicted), len(wanted))


def rouge_l(prediction: str, reference: str) -> float:
    """Longest-common-subsequence F-measure (Lin 2004), by dynamic programming."""
    a, b = rouge_tokens(prediction), rouge_tokens(reference)
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return f_measure(table[-1][-1], len(a), len(b))


def test_rouge_and_bleu_on_fixed_strings() -> None:
    metrics = rouge_and_bleu(["the cat sat on the mat", "a b c d"], [["the cat sat on the mat"], ["x", "a b c d"]])
    assert metrics["rouge1"] == metrics["rougeL"] == metrics["rougeLsum"] == 1.0
    assert metrics["bleu"] == pytest.approx(100.0)
    partial = rouge_and_bleu(["the cat sat"], [["the cat ran away"]])
    assert partial["rouge1"] == pytest.approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))
    assert partial["rouge2"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    # Order matters to ROUGE-L only: every word shared, one in order.
    reversed_words = rouge_and_bleu(["a b c d"], [["d c b a"]])
    assert (reversed_words["rouge1"], reversed_words["rougeL"]) == (1.0, 0.25)
    # BLEU (Papineni et al. 2002) by hand: clipped n-gram precisions 5/6, 3/5, 2/4, 1/3 of
    # equal lengths (no brevity penalty).
    one_word = rouge_and_bleu(["the cat sat on the mat"], [["the cat sat on a mat"]])
    assert one_word["bleu"] == pytest.approx(100 * math.exp(sum(map(math.log, (5 / 6, 3 / 5, 2 / 4, 1 / 3))) / 4))
    assert one_word["rougeL"] == pytest.approx(5 / 6)


def greedy_completion(loaded: InferenceModel, prompt: str, new_tokens: int) -> str:
    """Greedy decoding with the model's forward alone: the argmax after EOS + prompt, up to EOS."""
    eos = loaded.tokenizer.special.eos_id
    ids, completion = [eos] + loaded.tokenizer.encode(prompt), []
    with torch.no_grad():
        for _ in range(new_tokens):
            token = int(loaded.model(torch.tensor([ids]))[0, -1].argmax())
            if token == eos:
                break
            ids.append(token)
            completion.append(token)
    return loaded.tokenizer.decode(completion).strip()


def test_generation_task_scores_against_fixed_references(loaded: InferenceModel, tmp_path: Path) -> None:
    task = TaskConfig(type=TaskType.generation, path="", name="answers")
    task.generation.max_new_tokens = 8
    pairs = [("kato mine", "saka sane hika mine"), ("sane hika mine", "lo pe di fu"), ("lo pe", "mine kato mine")]
    task.path = str(write_jsonl(tmp_path / "gen.jsonl", [{"prompt": p, "reference": r} for p, r in pairs]))
    loaded.model.train()
    metrics = evaluate_model(loaded.model, loaded.tokenizer, [task], batch_size=2)
    assert loaded.model.training  # handed back in the mode it came in
    loaded.model.eval()
    completions = [greedy_completion(loaded, prompt, 8) for prompt, _ in pairs]
    expected_rouge1 = sum(rouge1(c, r) for c, (_, r) in zip(completions, pairs)) / len(pairs)
    expected_rouge_l = sum(rouge_l(c, r) for c, (_, r) in zip(completions, pairs)) / len(pairs)
    assert metrics["answers/rouge1"] == pytest.approx(expected_rouge1)
    assert metrics["answers/rougeL"] == pytest.approx(expected_rouge_l)
    assert 0 < expected_rouge1 < 1, completions  # neither all right nor all wrong: the check can tell


def test_command_writes_results_and_a_table(
    trained_run: Path, loaded: InferenceModel, tmp_path: Path, run_module
) -> None:
    records = known_answers(loaded, ["kato", "mine saka"], [["mine", "saka"], ["sane", "lo"]])
    mc = write_jsonl(tmp_path / "mc.jsonl", records)  # one right answer, one wrong: acc 0.5
    text = trained_run / "tokenizer" / "tokenizer_meta.json"  # any text will do
    tasks = f"tasks=[{{type: perplexity, path: '{text}'}}, {{type: multiple_choice, path: '{mc}'}}]"
    output = tmp_path / "results.json"
    result = run_module("pretrain.evaluate", f"checkpoint={trained_run}", tasks, f"output_file={output}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    results = json.loads(output.read_text())
    assert results["step"] == 12 and set(results["metrics"]) >= {"perplexity_tokenizer_meta/ppl"}
    assert results["metrics"]["multiple_choice_mc/acc"] == 0.5
    assert re.search(r"^multiple_choice_mc +acc +0\.5000$", result.stdout, re.MULTILINE)
    assert "\r" not in result.stderr  # no progress bar redrawn into a pipe
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mc.jsonl", "results.json"]
