"""Where every file of a curation run lives under output_dir.

part-<unit>-<k>.jsonl.zst               the clean shards, in unit order
report.json, report.png                 counts of everything (see docs/curation.md)
removed/filter-<unit>-<k>...            documents the filters removed and unreadable records
removed/dedup-<unit>-<k>...             duplicates, each with the id it duplicates
removed/duplicate_map-<unit>-<k>...     removed id -> kept id, for every duplicate
_work/run.json                          the config and inputs this output_dir belongs to
_work/done/<stage>/<unit>.done.json     a unit's stats: its completion marker (the executor's)
_work/filter/<unit>-0000.jsonl.zst      documents that passed the filters, waiting for dedup
_work/keys/<unit>/                      dedup keys: ids, exact hashes, signatures, sorted runs
_work/buckets/<partition>.npy           (removed, survivor) codes of one key partition's clusters
_work/decontaminate/                   the n-gram index of decontaminate.tasks
_work/clusters/<unit>.npy               (removed document, survivor) codes of one unit
_work/components/                       on-disk connected components' scratch (clusters unit)
_work/slurm/                            submitit's scripts and logs (executor=slurm)
"""

from __future__ import annotations

from pathlib import Path

from data_pipeline.executors.work_dir import WorkDir


class CurateOutputDir(WorkDir):
    def __init__(self, output_dir: str | Path) -> None:
        super().__init__(output_dir)
        self.removed = self.root / "removed"
        self.keys = self.work / "keys"
        self.components = self.work / "components"  # emptied when the clusters unit starts and ends
        self.decontaminate = self.work / "decontaminate"  # the task n-gram index (decontaminate/index.py)

    def make_dirs(self) -> None:
        for folder in (self.work / "filter", self.keys, self.work / "buckets", self.work / "clusters", self.removed):
            folder.mkdir(parents=True, exist_ok=True)

    @property
    def report(self) -> Path:
        return self.root / "report.json"

    def output_prefix(self, unit: str) -> Path:
        return self.root / f"part-{unit}"

    def filtered_prefix(self, unit: str) -> Path:
        return self.work / "filter" / unit

    def unit_keys(self, unit: str) -> Path:
        return self.keys / unit

    def forest(self, partition: str) -> Path:
        return self.work / "buckets" / f"{partition}.npy"

    def removals(self, unit: str) -> Path:
        return self.work / "clusters" / f"{unit}.npy"

    def removed_prefix(self, stage: str, unit: str) -> Path:
        # Beside the removed documents, so output_dir's top level holds clean shards only and
        # can be given as it is to the tokenizer.
        return self.removed / f"{stage}-{unit}"

    @staticmethod
    def shards_of(prefix: Path) -> list[Path]:
        """The finished shards a ShardWriter wrote under ``prefix``, in order."""
        return sorted(prefix.parent.glob(f"{prefix.name}-[0-9][0-9][0-9][0-9].jsonl.zst"))
