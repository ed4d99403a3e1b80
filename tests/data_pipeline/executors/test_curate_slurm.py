"""Curation as Slurm job arrays (launch/curate_slurm.sh on the single-node Slurm of
tests/conftest.py) keeps exactly the documents that one local process keeps."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import zstandard

REPO = Path(__file__).resolve().parents[3]


def kept_documents(output_dir: Path) -> list[str]:
    """The text of every document in the output shards, in their order."""
    texts = []
    for shard in sorted(output_dir.glob("part-*.jsonl.zst")):
        with zstandard.ZstdDecompressor().stream_reader(shard.open("rb")) as stream:
            texts += [json.loads(line)["text"] for line in io.TextIOWrapper(stream, encoding="utf-8")]
    return texts


def test_curation_on_slurm_keeps_the_documents_of_a_local_run(slurm, corpus: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO), "CPUS": "1"}
    local = [
        sys.executable,
        "-m",
        "data_pipeline.curate",
        f"input={corpus}",
        f"output_dir={tmp_path / 'local'}",
        "progress=false",
    ]
    subprocess.run(local, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    submitted = subprocess.run(
        ["bash", str(REPO / "launch/curate_slurm.sh"), str(corpus), str(tmp_path / "slurm"), "3"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert submitted.returncode == 0, submitted.stderr
    slurm.wait_until_idle()
    on_slurm = kept_documents(tmp_path / "slurm")
    assert on_slurm and on_slurm == kept_documents(tmp_path / "local"), slurm.log_tail()
