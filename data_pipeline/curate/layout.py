"""Where every file of a curation run lives under output_dir.

  part-<source>-<k>.jsonl.zst         the clean shards
  report.json                         counts of everything (see docs/curation.md)
  duplicate_map.jsonl.zst             removed id -> kept id, for every duplicate
  removed/filter-<source>-<k>...      documents the filters removed and unreadable records
  removed/dedup-<source>-<k>...       duplicates, each with the id it duplicates
  _work/run.json                      the config and inputs this output_dir belongs to
  _work/filter/<source>.stats.json    filter stage done for that source (completion marker)
  _work/dedup/stats.json              dedup stage done
  _work/write/<source>.stats.json     write stage done for that source
"""
from __future__ import annotations

from pathlib import Path


class Layout:
    def __init__(self, output_dir: str | Path) -> None:
        self.root = Path(output_dir)
        self.work = self.root / "_work"
        self.removed = self.root / "removed"

    def make_dirs(self) -> None:
        for folder in (self.work / "filter", self.work / "dedup", self.work / "write", self.removed):
            folder.mkdir(parents=True, exist_ok=True)

    @property
    def run_file(self) -> Path:
        return self.work / "run.json"

    @property
    def report(self) -> Path:
        return self.root / "report.json"

    @property
    def duplicate_map_prefix(self) -> Path:
        # Beside the removed documents, so output_dir's top level holds clean shards only and
        # can be given as it is to the tokenizer.
        return self.root / "removed" / "duplicate_map"

    @property
    def dedup_stats(self) -> Path:
        return self.work / "dedup" / "stats.json"

    def output_prefix(self, source: int) -> Path:
        return self.root / f"part-{source:05d}"

    def filtered_prefix(self, source: int) -> Path:
        """Documents that passed the filters, waiting for dedup."""
        return self.work / "filter" / f"{source:05d}"

    def signatures(self, source: int) -> Path:
        return self.work / "filter" / f"{source:05d}.signatures.npz"

    def filter_stats(self, source: int) -> Path:
        return self.work / "filter" / f"{source:05d}.stats.json"

    def duplicates(self, source: int) -> Path:
        return self.work / "dedup" / f"{source:05d}.duplicates.json"

    def write_stats(self, source: int) -> Path:
        return self.work / "write" / f"{source:05d}.stats.json"

    def removed_prefix(self, stage: str, source: int) -> Path:
        return self.removed / f"{stage}-{source:05d}"

    @staticmethod
    def shards_of(prefix: Path) -> list[Path]:
        """The finished shards a ShardWriter wrote under ``prefix``, in order."""
        return sorted(prefix.parent.glob(f"{prefix.name}-[0-9][0-9][0-9][0-9].jsonl.zst"))
