"""Every command's config and input errors: one line on rank 0, naming the setting, exit 1."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest
from hydra import compose, initialize_config_dir

import data_pipeline.curate.cli
import data_pipeline.filters.quality_train
import data_pipeline.tokenize.cli
import data_pipeline.tokenizer.train
import pretrain.evaluate
import pretrain.export
import pretrain.generate
import pretrain.plan
import pretrain.train
from data_pipeline.cli_errors import run_command
from data_pipeline.command import CONFIG_DIR


def run_in_process(main: Callable[[], None], args: list[str], capsys) -> tuple[int, str]:
    """``main`` as the command line would run it: (exit status, stderr)."""
    with pytest.raises(SystemExit) as stopped:
        run_command(main, ["command", *args])
    return stopped.value.code, capsys.readouterr().err


train_main = pretrain.train.main

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


# Every command (its root config configs/<config>.yaml): a misspelt key, what it should have
# been, and the command's config groups (configs/<group>/; all commands share configs/, so
# each must list only its own in --help).
COMMANDS = {
    "curate": (
        data_pipeline.curate.cli.main,
        "curate",
        "filters.gopher_quality.min_wrds",
        "min_words",
        {"executor", "filters/c4"},
    ),
    "train_quality": (data_pipeline.filters.quality_train.main, "train_quality", "epoch", "epochs", set()),
    "train_tokenizer": (data_pipeline.tokenizer.train.main, "tokenizer", "vocab_siz", "vocab_size", set()),
    "tokenize": (data_pipeline.tokenize.cli.main, "tokenize", "tokens_per_shrd", "tokens_per_shard", {"executor"}),
    "train": (
        train_main,
        "train",
        "train.max_step",
        "max_steps",
        {"data", "experiment", "model", "objective", "optim", "parallel"},
    ),
    "plan": (pretrain.plan.main, "plan", "cluster.gpus_per_nod", "gpus_per_node", {"cluster", "model", "optim"}),
    "evaluate": (pretrain.evaluate.main, "evaluate", "batch_sise", "batch_size", set()),
    "generate": (pretrain.generate.main, "generate", "top_pp", "top_p", set()),
    "export": (pretrain.export.main, "export", "overwrit", "overwrite", set()),
}
ALL_GROUPS = set().union(*(groups for *_, groups in COMMANDS.values()))


@pytest.mark.parametrize("plus", ["", "+"], ids=["key", "+key"])
@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_names_an_unknown_key_with_a_suggestion(
    name: str, plus: str, capsys, tmp_path: Path, monkeypatch
) -> None:
    """``key=value`` is refused by Hydra's typed config, ``+key=value`` by the command's own check."""
    monkeypatch.chdir(tmp_path)  # where curate and train make their run dirs
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    main, _, key, field, _ = COMMANDS[name]
    required = ["input=x", "output_dir=out"] if name == "curate" else []  # curate's run dir is output_dir
    status, err = run_in_process(main, [*required, f"{plus}{key}=1"], capsys)
    prefix = key.rpartition(".")[0]
    suggestion = f"{prefix}.{field}" if prefix else field
    assert status == 1 and err.startswith(f"error: unknown setting {key} (") and err.count("\n") == 1, err
    assert err.rstrip().endswith(f"; did you mean {suggestion}?"), err


@pytest.mark.parametrize("name", COMMANDS)
def test_help_lists_the_commands_own_config_groups(name: str) -> None:
    """``--help``'s text (Hydra's template, configs/hydra/help/command.yaml) from the command's
    composed config; the whole ``--help`` costs seconds more (Hydra lists every group it knows
    for templates that would ask for them)."""
    _, config_name, *_, groups = COMMANDS[name]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        help_text = compose(config_name=config_name, return_hydra_config=True).hydra.help.template
    listed = help_text.split("== Configuration groups ==")[1].split("== Config ==")[0].splitlines()
    assert {line.split(": ")[0] for line in listed if ": " in line} == groups, help_text
    assert not any(line.startswith(f"{other}: ") for line in listed for other in ALL_GROUPS - groups)
