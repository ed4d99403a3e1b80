"""Every command's config and input errors: one line on rank 0, naming the setting, exit 1."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

import data_pipeline.train_tokenizer
import pretrain.evaluate
import pretrain.generate
import pretrain.train
from data_pipeline.cli_errors import run_command
from pretrain.config import register_configs


def run_in_process(main: Callable[[], None], args: list[str], capsys) -> tuple[int, str]:
    """``main`` as the command line would run it: (exit status, stderr)."""
    with pytest.raises(SystemExit) as stopped:
        run_command(main, ["command", *args])
    return stopped.value.code, capsys.readouterr().err


def train_main() -> None:
    register_configs()
    pretrain.train.main()


CASES = [
    (train_main, ["train.max_step=10"], "unknown setting train.max_step", "did you mean train.max_steps?"),
    (train_main, ["+train.max_step=10"], "unknown setting train.max_step", "did you mean train.max_steps?"),
    (
        train_main,
        ["train.eval_tasks=[{type: perplexity, pathh: x}]"],
        "pathh in train.eval_tasks",
        "did you mean path?",
    ),
    (
        train_main,
        ["+train.eval_tasks=[{type: perplexity, pathh: x}]"],
        "pathh in train.eval_tasks",
        "did you mean path?",
    ),
    (train_main, ["objective=bert"], "objective=bert", "choose one of clm, mlm, sft, span"),
    (train_main, ["model.n_layers=four"], "model.n_layers", "could not be converted to Integer"),
    (train_main, ["parallel.tp=3"], "parallel.tp", "launch a multiple of 3 processes"),
    (train_main, ["train.eval_tasks=[{type: perplexity"], "train.eval_tasks=[{type: perplexity", "quote lists"),
    (pretrain.generate.main, ["top_pp=0.9"], "unknown setting top_pp", "did you mean top_p?"),
    (
        pretrain.evaluate.main,
        ["checkpoint=x", "tasks=[{type: perplexity, path: x, limt: 3}]"],
        "limt in tasks",
        "did you mean limit?",
    ),
    (
        pretrain.evaluate.main,
        ["checkpoint=nowhere", "tasks=[{type: perplexity, path: x}]"],
        "nowhere",
        "no complete checkpoint",
    ),
    (data_pipeline.train_tokenizer.main, ["vocab_siz=300"], "unknown setting vocab_siz", "did you mean vocab_size?"),
    # LoRA's settings, checked before any process group starts
    (train_main, ["lora.rank=-1"], "lora.rank=-1", "must be >= 0"),
    (
        train_main,
        ["lora.rank=2", "lora.targets=[q,x]"],
        "lora.targets[1]",
        "expected one of [q, k, v, o, gate, up, down]",
    ),
    (train_main, ["lora.rank=2", "lora.targets=[]"], "lora.targets", "is empty"),
    (train_main, ["lora.rank=2", "lora.targets=[q,q]"], "lora.targets", "names a linear twice"),
    (train_main, ["lora.rank=2", "lora.dropout=1.0"], "lora.dropout=1.0", "must be in [0, 1)"),
    (
        train_main,
        ["lora.rank=2", "model.activation=gelu", "lora.targets=[gate]"],
        "model.activation=gelu",
        "has no gate linear",
    ),
]


@pytest.mark.parametrize("main, args, setting, fix", CASES, ids=[" ".join(case[1])[:40] for case in CASES])
def test_error_is_one_line_naming_the_setting(
    main, args: list[str], setting: str, fix: str, capsys, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # Hydra's run dir of pretrain.train lands here
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    status, err = run_in_process(main, args, capsys)
    lines = err.strip().splitlines()
    assert status == 1 and 1 <= len(lines) <= 3, err
    assert lines[0].startswith("error: ") and setting in lines[0] and fix in lines[0], err
    assert "Traceback" not in err and "HYDRA_FULL_ERROR" not in err


def test_other_ranks_keep_quiet_and_debug_shows_the_traceback(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setenv("RANK", "1")
    status, err = run_in_process(train_main, ["parallel.tp=3", "run_dir=run"], capsys)
    assert status == 1 and err == ""
    # The run's log has every rank's errors.
    assert "rank 1: error: world size 1 is not divisible by parallel.tp" in (tmp_path / "run" / "train.log").read_text()
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="parallel.tp"):
        run_command(train_main, ["command", "parallel.tp=3", "--debug"])
    assert os.environ.get("HYDRA_FULL_ERROR") is None  # left as it was
