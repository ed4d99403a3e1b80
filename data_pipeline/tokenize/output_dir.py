"""Where every file of a tokenize run lives under output_dir.

<split>-<NNNNN>.bin/.idx/.json    the token shards, tokens_per_shard tokens each but the last
                                  (format=chat: also .mask, and whole samples per shard)
<split>.shards.json               the split index: every shard's size (the loader reads only it)
tokenizer.model, tokenizer_meta.json, ...   the tokenizer the shards were made with
summary.json                      what the run did (tokens and documents per split, ...)
_work/run.json                    the settings and input units this output_dir belongs to
_work/done/<stage>/<unit>.done.json   a unit's stats: its completion marker (the executor's)
_work/runs/<split>-<unit>.*       stage 1's token runs, one per input unit and split (removed at the end)
_work/fingerprint/                stage 1's n-gram runs and their merged hash ranges (removed at the end)
train.ngrams.u64, .json           the train split's n-gram fingerprint (decontaminate/fingerprint.py)
_work/slurm/                      submitit's scripts and logs (executor=slurm)
"""

from __future__ import annotations

from pathlib import Path

from data_pipeline.executors.work_dir import WorkDir
from data_pipeline.formats.token_shards import shard_prefix

TRAIN, VAL = "train", "val"
SPLITS = (TRAIN, VAL)
# The train documents of smallest id hash each unit lists in its stats (encode.py), for
# pack.py to give an otherwise empty val split (a small corpus).
VAL_FALLBACK_DOCUMENTS = 10


class TokenizeOutputDir(WorkDir):
    def __init__(self, output_dir: str | Path) -> None:
        super().__init__(output_dir)
        self.runs = self.work / "runs"
        self.fingerprint = self.work / "fingerprint"  # the fingerprint's runs and ranges (decontaminate/fingerprint.py)

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    def run_prefix(self, split: str, unit_index: int) -> Path:
        return shard_prefix(self.runs, split, unit_index)

    def shard_prefix(self, split: str, index: int) -> Path:
        return shard_prefix(self.root, split, index)
