"""Inputs cut into work units: a whole file, or a slice of one where the format allows it.

- uncompressed JSON lines: byte ranges; a unit owns the lines that *start* in its range;
- parquet: runs of whole row groups;
- ``hf:`` datasets: one unit per underlying data file (C4 on the hub: its ~1,000 files);
- gzip and zstd files: the whole file (a compressed stream cannot be entered midway).

Units are numbered in the global order (input file, then position), which is the order of
the documents for dedup's "earliest survives" rule."""

from __future__ import annotations

import os
from dataclasses import dataclass

from data_pipeline.io.config import HuggingFaceConfig
from data_pipeline.io.readers import HF_PREFIX, InputSource

SPLITTABLE_SUFFIXES = (".jsonl", ".json")


def unit_key(index: int) -> str:
    """An input unit's name in file names (sorts in unit order up to 100,000 units)."""
    return f"{index:05d}"


@dataclass(frozen=True)
class InputUnit:
    index: int
    source: InputSource
    # bytes [start, stop) of an uncompressed file, or row groups [start, stop) of a parquet
    # file; stop None: to the end
    start: int = 0
    stop: int | None = None
    data_file: str | None = None  # for an hf: dataset: the one data file of this unit
    name: str = ""  # what ids and bad-input reports call this input ("" : the source's name)

    @property
    def key(self) -> str:
        return unit_key(self.index)

    @property
    def input_name(self) -> str:
        return self.name or self.source.name

    @property
    def is_first_of_source(self) -> bool:
        return self.start == 0

    def __str__(self) -> str:
        if self.data_file is not None:
            return f"{self.key} ({self.input_name})"
        if self.stop is None and self.start == 0:
            return f"{self.key} ({self.source.name})"
        what = "row groups" if self.source.path.endswith(".parquet") else "bytes"
        return f"{self.key} ({self.source.name}, {what} {self.start}-{self.stop if self.stop is not None else 'end'})"


def unit_bytes(unit: InputUnit) -> int:
    """The unit's size: the bytes of its range or file as stored (an ``hf:`` dataset's data file
    asks its file system: the Hub for hf://), a parquet unit's uncompressed row groups."""
    if unit.data_file is not None:
        import fsspec

        file_system, path = fsspec.core.url_to_fs(unit.data_file)
        return int(file_system.size(path))
    if unit.source.path.endswith(".parquet"):
        import pyarrow.parquet as parquet

        metadata = parquet.ParquetFile(unit.source.path).metadata
        stop = metadata.num_row_groups if unit.stop is None else min(unit.stop, metadata.num_row_groups)
        return sum(metadata.row_group(group).total_byte_size for group in range(unit.start, stop))
    stop = os.path.getsize(unit.source.path) if unit.stop is None else unit.stop
    return stop - unit.start


def split_into_units(sources: list[InputSource], unit_size_mb: float, hf: HuggingFaceConfig) -> list[InputUnit]:
    max_bytes = max(1, int(unit_size_mb * 1e6))
    units: list[InputUnit] = []
    for source in sources:
        for start, stop, data_file, name in _slices(source, max_bytes, hf):
            units.append(InputUnit(len(units), source, start, stop, data_file, name))
    return units


def _slices(
    source: InputSource, max_bytes: int, hf: HuggingFaceConfig
) -> list[tuple[int, int | None, str | None, str]]:
    if source.path.startswith(HF_PREFIX):
        files = hf_data_files(source.path[len(HF_PREFIX) :], hf)
        folder = os.path.commonprefix(files)
        folder = folder[: folder.rfind("/") + 1]  # paths and hf:// URLs alike
        return [(0, None, file, f"{source.name}/{file[len(folder) :]}") for file in files]
    if source.path.endswith(".parquet"):
        return [(first, last, None, "") for first, last in _row_group_runs(source.path, max_bytes)]
    if source.path.endswith(SPLITTABLE_SUFFIXES):
        size = os.path.getsize(source.path)
        if size > max_bytes:
            return [(start, min(start + max_bytes, size), None, "") for start in range(0, size, max_bytes)]
    return [(0, None, None, "")]


def _row_group_runs(path: str, max_bytes: int) -> list[tuple[int, int]]:
    """Consecutive row groups of about max_bytes (uncompressed), at least one each."""
    import pyarrow.parquet as parquet

    metadata = parquet.ParquetFile(path).metadata
    runs, first, size = [], 0, 0
    for group in range(metadata.num_row_groups):
        group_bytes = metadata.row_group(group).total_byte_size
        if group > first and size + group_bytes > max_bytes:
            runs.append((first, group))
            first, size = group, 0
        size += group_bytes
    runs.append((first, max(metadata.num_row_groups, first + 1)))
    return runs


def hf_data_files(name: str, hf: HuggingFaceConfig) -> list[str]:
    """The data files behind a ``datasets`` dataset's split (resolved on the hub or locally)."""
    import datasets

    builder = datasets.load_dataset_builder(name, name=hf.name, data_files=hf.data_files)
    files = (builder.config.data_files or {}).get(hf.split)
    if not files:
        raise ValueError(
            f"input=hf:{name}: no data files for split {hf.split!r} (reader.hf.split, reader.hf.data_files)"
        )
    return sorted(str(f) for f in files)
