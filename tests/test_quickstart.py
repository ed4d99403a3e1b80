"""The README's main command, end to end, on the bundled sample plus corrupted shards: bad
input is counted, nothing else is lost, and every step leaves its output."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from pretrain.quickstart import SAMPLE_CORPUS

REPO = Path(__file__).resolve().parents[1]
# Other tests of this session may have made this process rank 0 of a process group; the
# quickstart must start as a fresh single process.
LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def test_quickstart_runs_the_whole_journey_despite_bad_shards(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLE_CORPUS, corpus, ignore=shutil.ignore_patterns("*.py"))
    pile = (corpus / "pile-00000.jsonl.zst").read_bytes()
    (corpus / "truncated.jsonl.zst").write_bytes(pile[: len(pile) // 2])
    with gzip.open(corpus / "broken-lines.json.gz", "wt") as handle:
        handle.write(
            '{"text": "A good document that is far too short for the filters."}\nnot json at all\n{"no_text": 1}\n'
        )
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "pretrain.quickstart", "--out", str(out), "--steps", "12", "--corpus", str(corpus)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={k: v for k, v in os.environ.items() if k not in LAUNCH_ENV},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "curated" / "report.json").read_text())
    events = {(Path(event["file"]).name, event["reason"]) for event in report["bad_input"]["events"]}
    files_with_errors = {name for name, _ in events}
    assert files_with_errors == {"truncated.jsonl.zst", "broken-lines.json.gz"}, events
    assert report["bad_input"]["records"] >= 3  # the truncation, the non-JSON line, the record without text
    assert report["output"]["documents"] > 400  # the good shards all came through
    for produced in (
        "curated/report.png",
        "tokenizer/tokenizer.model",
        "tokens/train-00000.bin",
        "train/curves.png",
        "train/metrics.jsonl",
        "eval.json",
        "samples.jsonl",
    ):
        assert (out / produced).exists(), produced
    sample = json.loads((out / "samples.jsonl").read_text().splitlines()[0])
    assert sample["prompt"].startswith("It is a truth") and sample["completion"]
