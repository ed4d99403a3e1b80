"""What the readers and writers of io/ read: ``reader.*`` and ``output.*`` of ``configs/curate.yaml``
(``reader.*`` also in the tokenizer's and tokenize's configs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class HuggingFaceConfig:
    """For ``input=hf:<hub name or local path>``: streamed with ``datasets.load_dataset``."""

    name: Optional[str] = None  # the dataset's configuration, e.g. "en" for allenai/c4
    split: str = "train"
    data_files: Optional[Any] = None  # str or list, passed to load_dataset as is


@dataclass
class ReaderConfig:
    text_key: str = "text"
    # The first of these present in a record becomes its id ("meta.id" looks inside "meta");
    # without one, the id is "<file relative to the inputs' common folder>:<line>".
    id_keys: list[str] = field(default_factory=lambda: ["id", "meta.id"])
    # A record (line) larger than this is counted as bad input, not parsed: one giant document
    # must not stall a worker for minutes on rules it is certain to fail.
    max_record_bytes: int = 10_000_000
    hf: HuggingFaceConfig = field(default_factory=HuggingFaceConfig)


@dataclass
class OutputConfig:
    shard_size_mb: float = 256  # uncompressed JSONL per output shard, at most
    compression_level: int = 3  # zstd level of the output shards
    write_removed: bool = True  # removed documents go to <output_dir>/removed/ with their reason

    def problems(self) -> list[str]:
        """What is wrong with these settings, one line each (empty when they are fine)."""
        return [f"output.shard_size_mb={self.shard_size_mb}: need > 0"] if self.shard_size_mb <= 0 else []
