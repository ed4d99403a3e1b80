"""``train.sample_log``: which samples each step trained on, one file per data-parallel rank."""

from __future__ import annotations

import json
from pathlib import Path

from pretrain.data.loader import SampleBatch


class SampleLog:
    """``<run_dir>/samples/dp-rank-NNNNN.jsonl``, written by the first tensor-parallel rank
    of the first stage (its tensor-parallel and pipeline peers see the same samples).
    Records past the step training resumes from are dropped, so the logs always describe
    exactly the steps the model holds."""

    def __init__(
        self, run_dir: Path, *, dp_rank: int, dp_size: int, writer: bool, is_main: bool, resume_step: int
    ) -> None:
        directory = run_dir / "samples"
        directory.mkdir(parents=True, exist_ok=True)
        mine = directory / f"dp-rank-{dp_rank:05d}.jsonl"
        for log in directory.glob("dp-rank-*.jsonl"):
            # Our own file by its writer; files of ranks a resharded run no longer has, by rank 0.
            if (writer and log == mine) or (is_main and int(log.stem.split("-")[-1]) >= dp_size):
                _truncate(log, resume_step)
        self._file = open(mine, "a", buffering=1) if writer else None

    def write(self, step: int, samples: list[SampleBatch]) -> None:
        if self._file is not None:
            pairs = [[int(s), int(w)] for sample in samples for s, w in zip(sample.sources, sample.window_ids)]
            self._file.write(json.dumps({"step": step, "samples": pairs}) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _truncate(path: Path, last_step: int) -> None:
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in kept))
