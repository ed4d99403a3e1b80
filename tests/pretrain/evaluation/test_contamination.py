"""Contamination-audited evaluation: a run whose training data holds half of a task's items
reports 50 % contamination and the score on the other half alone (the same as evaluating those
items by themselves), a clean task reports 0, and a run without a fingerprint says "unknown"."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from data_pipeline.decontaminate.fingerprint import FingerprintRunWriter, merge_range, plan_ranges, publish
from pretrain.evaluate import EvaluateConfig, evaluate
from pretrain.evaluation.report import format_table
from pretrain.evaluation.tasks import TaskConfig, TaskType
from tests.pretrain.conftest import TEXT_WORDS, text_documents


def write_fingerprint(token_dir: Path, texts: list[str]) -> None:
    """What data_pipeline.tokenize writes beside the shards (its own functions, one unit)."""
    work = token_dir / "_work" / "fingerprint"
    writer = FingerprintRunWriter(work / "run-00000", 13)
    for text in texts:
        writer.add(text)
    stats = writer.close()
    ranges = plan_ranges([work / name for name in stats["runs"]], stats["hashes"])
    for unit in ranges:
        merge_range(unit, str(work))
    publish(token_dir, work, ranges, 13)


def unseen_text(rng: np.random.Generator, words: int) -> str:
    """Words in an order no training document has (they follow a successor rule)."""
    return " ".join(rng.choice(TEXT_WORDS, size=words)) + "."


def mc_record(text: str) -> dict:
    words = text.split()
    return {
        "context": " ".join(words[:14]),
        "choices": [" ".join(words[14:]), " ".join(reversed(words[14:]))],
        "label": 0,
    }


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


@pytest.fixture(scope="module")
def fingerprinted_run(tmp_path_factory, text_shards: Path, train_text_model) -> tuple[Path, Path]:
    """A run trained on a copy of text_shards with the n-gram fingerprint of its train text,
    evaluating a half-contaminated multiple choice task in the loop; and a folder of tasks."""
    root = tmp_path_factory.mktemp("contamination")
    token_dir = root / "tokens"
    shutil.copytree(text_shards, token_dir)
    write_fingerprint(token_dir, text_documents(300, seed=2))  # the train split's documents (conftest)
    tasks = root / "tasks"
    tasks.mkdir()
    rng = np.random.default_rng(5)
    seen = [text for text in text_documents(300, seed=2) if len(text.split()) >= 18][:10]
    unseen = [unseen_text(rng, 18) for _ in range(20)]
    write_jsonl(tasks / "half.jsonl", [mc_record(text) for pair in zip(seen, unseen[:10]) for text in pair])
    write_jsonl(tasks / "half_clean_items.jsonl", [mc_record(text) for text in unseen[:10]])
    write_jsonl(tasks / "clean.jsonl", [mc_record(text) for text in unseen[10:]])
    write_jsonl(tasks / "docs.jsonl", [{"text": text} for pair in zip(seen[:4], unseen[:4]) for text in pair])
    write_jsonl(tasks / "docs_clean_items.jsonl", [{"text": text} for text in unseen[:4]])
    run = train_text_model(
        root / "run",
        2,
        f"data.path={token_dir}",
        "train.eval_every=2",
        f"train.eval_tasks=[{{type: multiple_choice, path: {tasks / 'half.jsonl'}}}]",
    )
    return run, tasks


def task(kind: TaskType, path: Path, **settings) -> TaskConfig:
    return TaskConfig(type=kind, path=str(path), **settings)


def test_half_contaminated_task_reports_half_and_the_clean_score(fingerprinted_run, tmp_path: Path, capsys) -> None:
    run, tasks = fingerprinted_run
    metrics = evaluate(
        EvaluateConfig(
            checkpoint=str(run),
            output_file=str(tmp_path / "results.json"),
            tasks=[
                task(TaskType.multiple_choice, tasks / "half.jsonl"),
                task(TaskType.multiple_choice, tasks / "clean.jsonl"),
                task(TaskType.multiple_choice, tasks / "half_clean_items.jsonl"),
                task(TaskType.perplexity, tasks / "docs.jsonl"),
                task(TaskType.perplexity, tasks / "docs_clean_items.jsonl"),
            ],
        )
    )
    assert metrics["multiple_choice_half/contamination"] == 0.5 and metrics["multiple_choice_half/clean_examples"] == 10
    assert metrics["multiple_choice_clean/contamination"] == 0.0
    assert metrics["multiple_choice_clean/clean_acc"] == metrics["multiple_choice_clean/acc"]
    # the clean score is the score of the clean items evaluated alone
    alone = "multiple_choice_half_clean_items"
    assert metrics["multiple_choice_half/clean_acc"] == metrics[f"{alone}/acc"]
    assert metrics["multiple_choice_half/clean_acc_norm"] == metrics[f"{alone}/acc_norm"]
    assert metrics["perplexity_docs/contamination"] == 0.5
    assert metrics["perplexity_docs/clean_loss"] == pytest.approx(metrics["perplexity_docs_clean_items/loss"], rel=1e-6)
    assert metrics["perplexity_docs/clean_tokens"] == metrics["perplexity_docs_clean_items/tokens"]
    assert re.search(r"multiple_choice_half +contamination +0\.5000", capsys.readouterr().out)

    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    in_loop = next(record for record in logged if "multiple_choice_half/contamination" in record)
    assert in_loop["multiple_choice_half/contamination"] == 0.5 and "multiple_choice_half/clean_acc" in in_loop


def test_a_run_without_fingerprint_says_unknown(trained_run: Path, fingerprinted_run, tmp_path: Path) -> None:
    _, tasks = fingerprinted_run
    metrics = evaluate(
        EvaluateConfig(
            checkpoint=str(trained_run),
            output_file=str(tmp_path / "results.json"),
            tasks=[task(TaskType.multiple_choice, tasks / "half.jsonl")],
        )
    )
    assert math.isnan(metrics["multiple_choice_half/contamination"]) and "multiple_choice_half/clean_acc" not in metrics
    assert re.search(r"multiple_choice_half +contamination +unknown", format_table(metrics))
