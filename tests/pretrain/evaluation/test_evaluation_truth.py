"""Evaluation numbers that are hard to misread: windows of the run's train.seq_len, results
kept per task, a word when a non-causal model is run causally; clearer tokenizer and task errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from data_pipeline.tokenizer.train import TokenizerConfig, train_tokenizer
from pretrain.evaluate import EvaluateConfig, evaluate
from pretrain.evaluation.multiple_choice import read_questions
from pretrain.evaluation.tasks import TaskConfig, TaskType
from pretrain.export import ExportConfig, export
from pretrain.generate import GenerateConfig, generate


def perplexity_task(path: Path, **settings) -> TaskConfig:
    return TaskConfig(type=TaskType.perplexity, path=str(path), **settings)


def test_windows_default_to_train_seq_len_and_results_are_kept_per_task(
    trained_run: Path, text_shards: Path, tmp_path: Path
) -> None:
    output = tmp_path / "results.json"
    # The run trained with train.seq_len=64 (model.max_seq_len is 256).
    default = evaluate(
        EvaluateConfig(
            checkpoint=str(trained_run), tasks=[perplexity_task(text_shards, name="default")], output_file=str(output)
        )
    )
    explicit = evaluate(
        EvaluateConfig(
            checkpoint=str(trained_run),
            tasks=[
                perplexity_task(text_shards, name="w64", seq_len=64),
                perplexity_task(text_shards, name="w256", seq_len=256),
            ],
            output_file=str(output),
        )
    )
    assert default["default/loss"] == explicit["w64/loss"] != explicit["w256/loss"]
    results = json.loads(output.read_text())
    assert set(results["metrics"]) >= {"default/loss", "w64/loss", "w256/loss"}  # the first evaluation was kept
    assert results["tasks"]["default"]["seq_len"] == 64
    evaluate(
        EvaluateConfig(
            checkpoint=str(trained_run),
            tasks=[perplexity_task(text_shards, name="default", limit=1)],
            output_file=str(output),
        )
    )
    again = json.loads(output.read_text())
    assert again["metrics"]["w64/loss"] == results["metrics"]["w64/loss"] and again["tasks"]["default"]["limit"] == 1
    assert again["metrics"]["default/tokens"] < results["metrics"]["default/tokens"]  # the task's own results replaced


def test_generate_and_export_of_an_mlm_model_say_what_you_get(train_text_model, tmp_path: Path, capsys, caplog) -> None:
    run = train_text_model(tmp_path / "mlm", 2, "objective=mlm")
    generate(GenerateConfig(checkpoint=str(run), prompt="kato", max_new_tokens=2, stream=False))
    assert "trained with objective=mlm" in capsys.readouterr().err
    with caplog.at_level(logging.WARNING):
        export(ExportConfig(checkpoint=str(run), output_dir=str(tmp_path / "hf"), hf=False))
    assert "objective=mlm" in caplog.text and "causal attention" in caplog.text


def test_too_large_a_vocabulary_names_the_setting_and_the_limit(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "docs.jsonl").write_text(
        "".join(json.dumps({"text": f"a small corpus, line {i}."}) + "\n" for i in range(50))
    )
    config = TokenizerConfig(
        input=str(corpus), output_dir=str(tmp_path / "tok"), vocab_size=5000, num_threads=1, hf_export=False
    )
    with pytest.raises(
        ValueError, match=r"vocab_size=5000: this corpus has text for at most \d+ pieces; set vocab_size <= \d+"
    ):
        train_tokenizer(config)


def test_a_choice_row_without_label_says_so(tmp_path: Path) -> None:
    path = tmp_path / "mc.jsonl"
    path.write_text(json.dumps({"context": "kato", "choices": [" mine", " saka"]}) + "\n")
    with pytest.raises(ValueError, match=r'mc.jsonl:1: no "label"'):
        read_questions(str(path))
