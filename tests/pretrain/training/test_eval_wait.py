"""``train.eval_tasks`` run on rank 0 while the other ranks wait: a task longer than the
collective timeout does not stop the run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.pretrain.launch.test_launch import fresh_environment

REPO = Path(__file__).resolve().parents[3]
TIMEOUT_S, TASK_S = 8, 12


def test_a_task_slower_than_the_collective_timeout_does_not_stop_two_ranks(
    text_shards: Path, text_tokenizer: Path, tmp_path: Path
) -> None:
    overrides = [
        f"data.path={text_shards}",
        f"data.tokenizer={text_tokenizer}",
        f"run_dir={tmp_path}",
        "train.seq_len=32",
        "train.micro_batch_size=2",
        "train.global_batch_size=4",
        "train.max_steps=1",
        "train.eval_every=1",
        "train.eval_batches=1",
        "train.save_every=0",
        "train.log_every=1",
        "logging.progress_bar=false",
        f"train.eval_tasks=[{{type: perplexity, path: '{text_shards}', name: held_out, limit: 2}}]",
    ]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "tests/pretrain/workers/eval_wait_worker.py"),
        str(TIMEOUT_S),
        str(TASK_S),
        *overrides,
    ]
    done = subprocess.run(command, cwd=tmp_path, env=fresh_environment(), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "held_out/ppl" in r] == [1]
