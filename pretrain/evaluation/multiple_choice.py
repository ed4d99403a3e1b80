"""Zero- and few-shot multiple choice: the answer is the choice the model finds most likely
after the context. ``acc`` compares summed log-likelihoods; ``acc_norm`` divides them by the
choice's length in characters first, as lm-evaluation-harness does, so that long choices
are not penalised for their length alone."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional, Sequence

from data_pipeline.formats.jsonl import read_jsonl
from pretrain.evaluation.contamination import clean_metrics
from pretrain.evaluation.scoring import continuation_log_probs
from pretrain.evaluation.tasks import TaskConfig
from pretrain.inference.tokenizer import StartToken, TextTokenizer
from pretrain.model.gpt import GPT


@dataclass(frozen=True)
class Question:
    context: str
    choices: tuple[str, ...]
    label: int


def read_questions(path: str) -> list[Question]:
    questions = []
    for number, record in read_jsonl(path):
        context, choices, label = record.get("context"), record.get("choices"), record.get("label")
        if (
            not isinstance(context, str)
            or not isinstance(choices, list)
            or not all(isinstance(c, str) for c in choices)
        ):
            raise ValueError(f'{path}:{number}: a record needs "context" (a string) and "choices" (a list of strings)')
        if label is None:
            raise ValueError(f'{path}:{number}: no "label"; give the index of the right choice, in [0, {len(choices)})')
        if not isinstance(label, int) or not 0 <= label < len(choices):
            raise ValueError(f'{path}:{number}: "label" must be the index of the right choice, in [0, {len(choices)})')
        questions.append(Question(context, tuple(choices), label))
    if not questions:
        raise ValueError(f"{path}: no questions")
    return questions


def contexts_with_shots(questions: Sequence[Question], shots_from: Sequence[Question], task: TaskConfig) -> list[str]:
    """Each context after ``num_fewshot`` solved examples, drawn reproducibly and never the question itself."""
    if task.num_fewshot == 0:
        return [question.context for question in questions]
    rng = random.Random(task.fewshot_seed)
    contexts = []
    for question in questions:
        pool = [shot for shot in shots_from if shot != question]
        if len(pool) < task.num_fewshot:
            raise ValueError(
                f"task {task.label}: num_fewshot={task.num_fewshot}, but only {len(pool)} examples to draw from"
            )
        shots = rng.sample(pool, task.num_fewshot)
        solved = [shot.context + task.target_delimiter + shot.choices[shot.label] for shot in shots]
        contexts.append(task.example_delimiter.join([*solved, question.context]))
    return contexts


def split_request(
    tokenizer: TextTokenizer, start: list[int], context: str, continuation: str
) -> tuple[list[int], list[int]]:
    """Context and continuation ids cut from the ids of the whole text, so that the
    continuation is tokenized as it would be in running text (as lm-evaluation-harness does)."""
    context_ids = start + tokenizer.encode(context)
    whole = start + tokenizer.encode(context + continuation)
    return whole[: len(context_ids)], whole[len(context_ids) :]


def accuracy(log_likelihoods: Sequence[Sequence[float]], questions: Sequence[Question]) -> dict[str, float]:
    correct = correct_norm = 0
    for scores, question in zip(log_likelihoods, questions):
        normalized = [score / max(len(choice), 1) for score, choice in zip(scores, question.choices)]
        correct += max(range(len(scores)), key=scores.__getitem__) == question.label
        correct_norm += max(range(len(normalized)), key=normalized.__getitem__) == question.label
    return {
        "acc": correct / len(questions),
        "acc_norm": correct_norm / len(questions),
        "examples": float(len(questions)),
    }


def multiple_choice(
    model: GPT,
    tokenizer: TextTokenizer,
    task: TaskConfig,
    batch_size: int,
    start_token: StartToken,
    clean: Optional[Sequence[bool]] = None,
) -> dict[str, float]:
    every_question = read_questions(task.path)
    questions = every_question[: task.limit]
    shots_from = read_questions(task.fewshot_path) if task.fewshot_path else every_question
    start = tokenizer.start_ids(start_token)
    requests = []
    for question, context in zip(questions, contexts_with_shots(questions, shots_from, task)):
        for choice in question.choices:
            context_ids, choice_ids = split_request(tokenizer, start, context, task.target_delimiter + choice)
            if not choice_ids:
                raise ValueError(f"task {task.label}: the choice {choice!r} of {question.context[:40]!r}... is empty")
            requests.append((context_ids, choice_ids))
    scores = continuation_log_probs(model, requests, batch_size, tokenizer.special.pad_id, desc=task.label)
    per_question, offset = [], 0
    for question in questions:
        per_question.append(scores[offset : offset + len(question.choices)])
        offset += len(question.choices)
    metrics = accuracy(per_question, questions)
    if clean is not None:  # the questions with no n-gram in the training data
        metrics.update(clean_metrics(accuracy, clean, per_question, questions))
    return metrics
