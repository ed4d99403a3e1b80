"""The README's commands run as written: every ``python -m`` command of its "pipeline" table
and of its "Training" section, in order, on a small corpus (80 documents of the bundled
sample). Only sizes shrink, by overrides appended to each command (fewer steps and pieces,
a smaller model); placeholders (RAW, DIR, TOK, TOKENS, RUN, HF, runs/quickstart/tokens)
become directories of the test. The launch/ scripts and Slurm lines are covered by
tests/pretrain/launch/test_launch.py."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import zstandard

REPO = Path(__file__).resolve().parents[1]
SAMPLE_SHARD = REPO / "data_pipeline" / "sample_corpus" / "pile-00000.jsonl.zst"
PLACEHOLDER = re.compile(r"(?<![\w/.-])(RAW|DIR|TOK|TOKENS|RUN|HF|runs/quickstart/tokens)(?![\w/.-])")
DIRECTORIES = {
    "RAW": "raw",
    "DIR": "curated",
    "TOK": "tokenizer",
    "TOKENS": "tokens",
    "RUN": "run",
    "HF": "hf",
    "runs/quickstart/tokens": "tokens",
}
TINY_MODEL = ["model.n_layers=1", "model.d_model=32", "model.n_heads=2", "model.n_kv_heads=1"]
SHRINK = {
    "data_pipeline.curate": ["workers=1"],
    "data_pipeline.train_quality": ["buckets=4096"],
    "data_pipeline.train_tokenizer": ["vocab_size=600", "num_threads=1", "workers=1"],
    "data_pipeline.tokenize": ["workers=1"],
    "pretrain.train": [
        "train.max_steps=2",
        "train.seq_len=32",
        "train.global_batch_size=8",
        "train.eval_batches=1",
        *TINY_MODEL,
    ],
    "pretrain.generate": ["max_new_tokens=4"],
}
LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def section(text: str, title: str) -> str:
    """From the ``## title`` heading to the next ``## `` heading."""
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def pipeline_commands(readme: str) -> list[str]:
    rows = section(readme, "The pipeline, step by step").splitlines()
    return [row.split("`")[1].replace("\\|", "|") for row in rows if row.startswith("| `python -m ")]


def training_commands(readme: str) -> list[str]:
    """The ``python -m`` lines of the section's bash blocks (continuations joined); Slurm
    sweeps need a cluster and are left out."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section(readme, "Training"), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" # ")[0].strip()
            if line.startswith("python -m ") and "hydra/launcher=slurm" not in line:
                commands.append(line)
    return commands


def as_run_here(command: str, workdir: Path) -> list[str]:
    words = shlex.split(command)
    assert words[:2] == ["python", "-m"], command
    module, arguments = words[2], words[3:]
    arguments = [PLACEHOLDER.sub(lambda m: str(workdir / DIRECTORIES[m.group(1)]), arg) for arg in arguments]
    return [sys.executable, "-m", module, *arguments, *SHRINK.get(module, [])]


def write_raw_corpus(directory: Path, documents: int) -> None:
    directory.mkdir()
    with open(SAMPLE_SHARD, "rb") as compressed:
        lines = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(compressed), encoding="utf-8").readlines()
    (directory / "docs.jsonl").write_text("".join(lines[:documents]))


def test_readme_commands_run_as_written(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    pipeline, training = pipeline_commands(readme), training_commands(readme)
    assert [shlex.split(c)[2] for c in pipeline] == [
        "data_pipeline.curate",
        "data_pipeline.train_quality",
        "data_pipeline.train_tokenizer",
        "data_pipeline.tokenize",
        "pretrain.train",
        "pretrain.plan",
        "pretrain.evaluate",
        "pretrain.generate",
        "pretrain.export",
    ]
    assert len(training) >= 4 and any(" -m data.path=" in c for c in training)  # the examples, the plain run, a sweep
    write_raw_corpus(tmp_path / "raw", documents=80)
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    outputs = {}
    for command in pipeline + training:
        done = subprocess.run(
            as_run_here(command, tmp_path), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
        outputs[command] = done.stdout + done.stderr

    # The token directory carries the tokenizer, so the run made with data.path alone holds it
    # and evaluate, generate and export (which ran above) found it.
    assert (tmp_path / "tokens" / "tokenizer.model").exists() and (
        tmp_path / "run" / "tokenizer" / "tokenizer.model"
    ).exists()
    tokenize_output = next(text for command, text in outputs.items() if "data_pipeline.tokenize" in command)
    validation_docs = int(re.search(r"val ([\d,]+) docs", tokenize_output).group(1).replace(",", ""))
    assert validation_docs > 0  # 80 documents at the default val_fraction still give a validation split
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "val_loss" in metrics[-1]  # the final evaluation
    assert "layout tp 1 × pp 1 × dp 1" in (tmp_path / "run" / "train.log").read_text()
    assert stat.S_IMODE((tmp_path / "hf" / "model.safetensors").stat().st_mode) & 0o044 == 0o044  # shareable
    # The plain run's silent gap (a warmup longer than its shrunk max_steps) was said.
    assert (
        "optim.warmup_steps=100 exceeds train.max_steps=2" in (tmp_path / "runs" / "tiny-clm" / "train.log").read_text()
    )
    # A re-run of tokenize finds every unit done and still reports what the shards hold.
    tokenize = next(command for command in pipeline if "data_pipeline.tokenize" in command)
    rerun = subprocess.run(
        as_run_here(tokenize, tmp_path), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert re.search(r"\(1 already done\): [\d,]+ documents, [1-9][\d,]* tokens", rerun.stdout), rerun.stdout
    for run_dir in (
        tmp_path / "runs" / "tiny-clm",
        tmp_path / "runs" / "gpt-125m",
        tmp_path / "runs" / "lr-sweep" / "0",
        tmp_path / "runs" / "lr-sweep" / "1",
    ):
        assert (run_dir / "checkpoints" / "step-00000002" / "complete.json").exists(), run_dir
