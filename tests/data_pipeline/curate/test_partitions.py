"""dedup.partitions=auto: one key partition per dedup.partition_mb of input text, compressed
inputs counted at COMPRESSION_RATIO times their size; the number reaches the stages and is part
of the run's claim on its output_dir."""

from __future__ import annotations

import json
import math
from pathlib import Path

import fsspec
import pytest

from data_pipeline.curate.cli import run_curation
from data_pipeline.curate.partitions import COMPRESSION_RATIO, dedup_partitions
from data_pipeline.dedup.config import DedupConfig
from data_pipeline.io.config import HuggingFaceConfig
from data_pipeline.io.readers import InputSource, resolve_inputs
from data_pipeline.io.units import InputUnit, split_into_units


def test_auto_is_one_partition_per_partition_mb_of_text_and_a_number_wins(tmp_path, files, prose):
    plain = files.jsonl(tmp_path / "in" / "a.jsonl", [{"text": prose(seed)} for seed in range(30)])
    packed = files.zst(tmp_path / "in" / "b.jsonl.zst", [{"text": prose(seed)} for seed in range(30, 60)])
    units = split_into_units(
        resolve_inputs(str(tmp_path / "in")), plain.stat().st_size / 3 / 1e6 * 1.001, HuggingFaceConfig()
    )
    assert len(units) == 4  # 3 byte ranges of a.jsonl, and b.jsonl.zst whole
    text_mb = (plain.stat().st_size + COMPRESSION_RATIO * packed.stat().st_size) / 1e6
    for partition_mb in (0.002, 0.01, 1000):
        expected = max(1, math.ceil(text_mb / partition_mb))
        assert dedup_partitions(DedupConfig(partition_mb=partition_mb), units) == expected
    assert (
        dedup_partitions(DedupConfig(partition_mb=0.002), units) > 20
        and dedup_partitions(DedupConfig(partition_mb=1000), units) == 1
    )
    assert dedup_partitions(DedupConfig(partitions=7, partition_mb=0.01), units) == 7


def test_the_chosen_number_reaches_the_stages_and_a_rerun_cannot_change_it(tmp_path, files, curate_config):
    source = tmp_path / "in" / "a.jsonl.zst"
    files.zst(source, files.pile_records("a", range(0, 8)))
    partition_mb = COMPRESSION_RATIO * source.stat().st_size / 3 / 1e6 * 1.001  # three partitions' worth of text
    config = curate_config(str(source), dedup__partition_mb=partition_mb)
    assert run_curation(config)["output"]["documents"] == 8
    work = Path(config.output_dir) / "_work"
    assert len(list((work / "done" / "buckets").glob("*.done.json"))) == 3
    assert json.loads((work / "run.json").read_text())["dedup_partitions"] == 3

    # a half-done run whose input grew under the same name: its partitioning must not change
    half_done = curate_config(str(source), output="half", stage="filter", dedup__partition_mb=partition_mb)
    run_curation(half_done)
    files.zst(source, files.pile_records("a", range(0, 30)))
    with pytest.raises(ValueError, match=r"holds a run with other settings \(the dedup_partitions\)"):
        run_curation(curate_config(str(source), output="half", stage="buckets", dedup__partition_mb=partition_mb))


@pytest.mark.parametrize("partitions", [0, "many", 2.5])
def test_a_bad_partitions_setting_is_named(tmp_path, files, curate_config, partitions):
    files.zst(tmp_path / "in" / "a.jsonl.zst", files.pile_records("a", range(0, 2)))
    with pytest.raises(ValueError, match=rf"dedup.partitions={partitions}: give a number >= 1, or auto"):
        run_curation(curate_config(str(tmp_path / "in"), dedup__partitions=partitions))


@pytest.mark.parametrize(
    "suffix, ratio", [(".json.gz", COMPRESSION_RATIO), (".parquet", COMPRESSION_RATIO), (".jsonl", 1)]
)
def test_an_hf_dataset_counts_its_data_files_sizes_as_stored(suffix, ratio):
    """hf: units are the dataset's data files: their sizes come from the file system, times
    COMPRESSION_RATIO when the file is compressed (json.gz, parquet), as they are when not."""
    memory = fsspec.filesystem("memory")
    source = InputSource(0, "hf:someone/partitions", "hf:someone/partitions")
    units = []
    for index in range(4):
        memory.pipe(f"/partitions/part-{index}{suffix}", b"x" * 250_000)
        units.append(
            InputUnit(index, source, data_file=f"memory://partitions/part-{index}{suffix}", name=f"part-{index}")
        )
    assert dedup_partitions(DedupConfig(partition_mb=0.1), units) == math.ceil(4 * 0.25 * ratio / 0.1)


@pytest.mark.parametrize("setting", ["dedup.partition_mb=0", "dedup.cluster_rows=0"])
def test_a_bad_partition_size_or_cluster_budget_is_named(tmp_path, files, curate_config, setting):
    files.zst(tmp_path / "in" / "a.jsonl.zst", files.pile_records("a", range(0, 2)))
    key, value = setting.split("=")
    with pytest.raises(ValueError, match=rf"{key}={value}: need"):
        run_curation(curate_config(str(tmp_path / "in"), **{key.replace(".", "__"): int(value)}))
