"""docs/sft.md's recipe, end to end through the commands, on the bundled chat set: a
pretrained run -> tokenize format=chat -> train objective=sft init_from=RUN -> generate
chat=true (fewer steps and a smaller sample than the documented run)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SAMPLE_CHAT = REPO / "data_pipeline" / "sample_chat"


def recipe_commands() -> list[list[str]]:
    """The ``python -m`` lines of docs/sft.md's recipe block (continuations joined)."""
    block = re.search(r"## Recipe.*?```bash\n(.*?)```", (REPO / "docs" / "sft.md").read_text(), flags=re.S).group(1)
    lines = [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip().startswith("python -m ")]
    return [shlex.split(line)[2:] for line in lines]


def test_the_sft_recipe_runs_offline_on_the_bundled_chat_set(trained_run: Path, run_module, tmp_path: Path) -> None:
    quickstart, tokenize, train, generate = recipe_commands()
    assert quickstart[0] == "pretrain.quickstart"  # the base model: here the session's tiny trained run
    run = str(trained_run)
    here = {
        "runs/quickstart/train/tokenizer": f"{run}/tokenizer",
        "runs/quickstart/train": run,
        "runs/chat-tokens": str(tmp_path / "chat-tokens"),
        "runs/sft": str(tmp_path / "sft"),
        "data_pipeline/sample_chat": str(SAMPLE_CHAT),
    }

    def localized(arguments: list[str], *shrink: str) -> list[str]:
        replaced = []
        for argument in arguments:
            key, equals, value = argument.partition("=")
            replaced.append(f"{key}={here.get(value, value)}" if equals else argument)
        return replaced + list(shrink)

    done = run_module(*localized(tokenize, "chat.seq_len=63", "workers=1"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"train [1-9]\d+ docs", done.stdout) and "chat: " in done.stdout, done.stdout
    done = run_module(
        *localized(
            train,
            "train.seq_len=63",
            "train.max_steps=6",
            "train.micro_batch_size=8",
            "train.global_batch_size=8",
            "train.eval_every=3",
            "train.eval_batches=1",
            "train.save_every=6",
            "logging.progress_bar=false",
        ),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    log = (tmp_path / "sft" / "train.log").read_text()
    assert "initialized from the weights of" in log and "val_loss" in (tmp_path / "sft" / "metrics.jsonl").read_text()
    done = run_module(
        *localized(generate, "max_new_tokens=6", f"output_file={tmp_path / 'answers.jsonl'}"), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    messages = json.loads((tmp_path / "answers.jsonl").read_text())["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] and messages[0][
        "content"
    ] == "Which river runs through Karsk?"
