"""``dedup.partitions=auto``: the number of key partitions (the buckets units) from the inputs' size.

A buckets unit holds its partition's share of every document's keys, ~400 bytes per document
(16 bands and an exact hash, 24 bytes each), about twice while sorting. Documents are not
counted before the filter stage, so the rule reads bytes: **one partition per
``dedup.partition_mb`` (64) MB of text, at least one**. Text bytes: a byte range or an
uncompressed file as it is, a parquet unit's uncompressed row groups; a compressed file
(.gz, .zst: the compressions the readers take) and an ``hf:`` dataset's compressed or parquet
data file (sized as stored) count ``COMPRESSION_RATIO`` times their size. At ~570-byte
documents (bench_scale.py) that is ~110,000 documents per partition: a buckets unit near
0.3 GB; longer documents need less.

The number is fixed when the run starts and recorded in ``_work/run.json``: a rerun over the
same output_dir whose inputs now give another number is refused (work_dir.WorkDir.claim), so
a half-done run never changes its partitioning."""

from __future__ import annotations

import math

from data_pipeline.dedup.config import AUTO, DedupConfig
from data_pipeline.io.units import InputUnit, unit_bytes

# web text compresses ~2.5-3x (C4 en: ~305 GB of json.gz for ~800 GB of JSON lines)
COMPRESSION_RATIO = 3
COMPRESSED_SUFFIXES = (".gz", ".zst")


def text_bytes(unit: InputUnit) -> float:
    """About how many bytes of JSON-lines text the unit holds."""
    if unit.data_file is not None:  # sized as stored: a parquet file's size is compressed too
        compressed = unit.data_file.endswith((*COMPRESSED_SUFFIXES, ".parquet"))
    else:  # a local parquet unit is sized by its uncompressed row groups
        compressed = unit.source.path.endswith(COMPRESSED_SUFFIXES)
    return unit_bytes(unit) * (COMPRESSION_RATIO if compressed else 1)


def dedup_partitions(dedup: DedupConfig, units: list[InputUnit]) -> int:
    """``dedup.partitions`` when it is a number, else the rule above."""
    if dedup.partitions != AUTO:
        return int(dedup.partitions)
    return max(1, math.ceil(sum(text_bytes(unit) for unit in units) / (dedup.partition_mb * 1e6)))
