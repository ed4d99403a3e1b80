"""The whole curation run: output, report, removed documents, bad input, resume, tasks and
workers giving the same result, and configuration errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from data_pipeline.command import compose_config
from data_pipeline.curate.cli import run_curation
from data_pipeline.curate.config import CurateConfig
from data_pipeline.executors.tasks import resolve_task
from data_pipeline.io.readers import BadInputError
from data_pipeline.io.writers import iter_shard

REPO = Path(__file__).resolve().parents[3]


def records(folder: Path, pattern: str) -> list[dict]:
    return [record for path in sorted(folder.glob(pattern)) for record in iter_shard(path)]


def output_files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("part-*.jsonl.zst"))}


def test_curation_output_report_and_removed(corpus, curate_config):
    config = curate_config(str(corpus))
    report = run_curation(config)
    out = Path(config.output_dir)
    kept = {record["id"]: record for record in records(out, "part-*.jsonl.zst")}
    expected = (
        {f"a-{i}" for i in range(6)} | {f"b-{i}" for i in range(6, 10)} | {f"c4/c4.json.gz:{i}" for i in (1, 2, 3)}
    )
    assert set(kept) == expected
    assert set(kept["a-0"]) == {"id", "text", "meta"}
    assert kept["a-0"]["meta"]["pile_set_name"] == "test" and kept["a-0"]["meta"]["language"] == "en"
    assert kept["c4/c4.json.gz:2"]["meta"]["url"] == "https://example.com/11"

    removed_records = records(out / "removed", "filter-*.jsonl.zst") + records(out / "removed", "dedup-*.jsonl.zst")
    removed = {record["id"]: record for record in removed_records}
    assert removed["b-exact-copy-of-a-1"]["reason"] == "dedup:exact"
    assert removed["b-exact-copy-of-a-1"]["duplicate_of"] == "a-1"
    assert removed["b-near-copy-of-a-3"]["reason"] == "dedup:near"
    assert removed["b-near-copy-of-a-3"]["duplicate_of"] == "a-3"
    assert removed["b-spam"]["reason"] == "gopher_repetition:dup_line_frac"
    for doc_id in ("a-short", "a-fr"):  # "<filter>:<rule>", with where it came from
        assert removed[doc_id]["reason"].split(":")[0] in {"gopher_repetition", "gopher_quality", "c4", "language"}
        assert removed[doc_id]["file"] == "pile/a.jsonl.zst" and removed[doc_id]["line"] in (7, 8)
    assert set(removed) == {"b-exact-copy-of-a-1", "b-near-copy-of-a-3", "a-short", "b-spam", "a-fr"}

    assert report == json.loads((out / "report.json").read_text())
    assert report["input"]["documents"] == 18 and report["output"]["documents"] == 13
    by_stage = {stage["stage"]: stage for stage in report["stages"]}
    assert by_stage["dedup_exact"]["removed"] == 1 and by_stage["dedup_near"]["removed"] == 1
    assert sum(stage["removed"] for stage in report["stages"]) == 5
    assert 0 < report["output"]["bytes"] < report["input"]["bytes"]
    duplicate_map = records(out, "removed/duplicate_map-*.jsonl.zst")
    assert {(d["id"], d["duplicate_of"]) for d in duplicate_map} == {
        ("b-exact-copy-of-a-1", "a-1"),
        ("b-near-copy-of-a-3", "a-3"),
    }


def test_bad_input_is_counted_and_good_documents_all_come_out(tmp_path, files, curate_config):
    folder = tmp_path / "mixed"
    good = files.pile_records("good", range(0, 5))
    files.zst(folder / "good.jsonl.zst", good)
    cut_zst = files.zst(folder / "cut.jsonl.zst", files.pile_records("zst", range(100, 160)))
    cut_zst.write_bytes(cut_zst.read_bytes()[: cut_zst.stat().st_size // 2])
    cut_gz = files.gz(folder / "cut.jsonl.gz", files.pile_records("gz", range(200, 260)))
    cut_gz.write_bytes(cut_gz.read_bytes()[: cut_gz.stat().st_size // 2])
    lines = [json.dumps(good_record) for good_record in files.pile_records("lines", range(300, 303))]
    broken = [lines[0], "{not json", json.dumps({"meta": {"id": "no-text"}}), lines[1]]
    (folder / "broken.jsonl").write_bytes(
        "\n".join(broken).encode() + b'\n{"text": "\xff"}\n' + lines[2].encode() + b"\n"
    )
    (folder / "empty.jsonl.zst").write_bytes(b"")
    files.jsonl(
        folder / "huge.jsonl", [{"text": "word " * 10_000_000}, files.pile_records("after-huge", range(400, 401))[0]]
    )

    config = curate_config(str(folder))
    report = run_curation(config)
    bad = report["bad_input"]
    assert bad["by_reason"] == {
        "corrupt_file": 2,
        "invalid_json": 1,
        "missing_text": 1,
        "invalid_utf8": 1,
        "empty_file": 1,
        "record_too_large": 1,
    }
    located = {(event["file"], event["line"], event["reason"]) for event in bad["events"]}
    assert {
        ("broken.jsonl", 2, "invalid_json"),
        ("broken.jsonl", 3, "missing_text"),
        ("broken.jsonl", 5, "invalid_utf8"),
        ("empty.jsonl.zst", 0, "empty_file"),
        ("huge.jsonl", 1, "record_too_large"),
    } <= located
    out_ids = {record["id"] for record in records(Path(config.output_dir), "part-*.jsonl.zst")}
    readable_cut = {doc_id for doc_id in out_ids if doc_id.startswith(("zst-", "gz-"))}
    assert {f"good-{i}" for i in range(5)} | {f"lines-{i}" for i in range(300, 303)} | {"after-huge-400"} <= out_ids
    # everything before each cut came out, and was counted as read
    assert len(readable_cut) == report["input"]["documents"] - 9 > 0
    removed_bad = [
        r
        for r in records(Path(config.output_dir) / "removed", "filter-*.jsonl.zst")
        if r["reason"].startswith("bad_input")
    ]
    assert len(removed_bad) == 7 and any(len(r["raw"] or "") >= 50_000_000 for r in removed_bad)

    with pytest.raises(BadInputError, match=r"broken.jsonl:2: invalid_json"):
        run_curation(curate_config(str(folder / "broken.jsonl"), output="strict", strict=True))


def test_resume_does_not_redo_finished_work(corpus, curate_config):
    config = curate_config(str(corpus), stage="filter")
    assert run_curation(config) is None  # the other stages are still to come
    out = Path(config.output_dir)
    filter_markers = {path: path.stat().st_mtime_ns for path in (out / "_work" / "done" / "filter").glob("*.done.json")}
    assert len(filter_markers) == 3
    config.stage = "all"
    config.dedup.cluster_rows = 1  # a result-neutral setting may change (clusters on disk)
    report = run_curation(config)
    assert {path: path.stat().st_mtime_ns for path in filter_markers} == filter_markers
    assert json.loads((out / "_work" / "done" / "clusters" / "all.done.json").read_text())["on_disk"]
    finished = {
        path: path.stat().st_mtime_ns
        for path in out.rglob("*")
        if path.is_file() and path.name not in ("report.json", "report.png")
    }
    assert run_curation(config) == report
    assert {path: path.stat().st_mtime_ns for path in finished} == finished

    config.filters.c4.min_sentences = 4
    with pytest.raises(ValueError, match=r"filters.c4.min_sentences: 3 -> 4"):
        run_curation(config)


def test_a_failing_clusters_unit_on_disk_leaves_no_scratch(corpus, curate_config, monkeypatch):
    from data_pipeline.dedup.disk_components import DiskComponents

    def fail(self: DiskComponents) -> None:
        assert any(self.scratch.rglob("*.bin"))  # the edges were on disk when it failed
        raise MemoryError("killed mid-step")

    monkeypatch.setattr(DiskComponents, "solve", fail)
    config = curate_config(str(corpus), dedup__cluster_rows=1)
    with pytest.raises(MemoryError):
        run_curation(config)
    assert not (Path(config.output_dir) / "_work" / "components").exists()


def test_tasks_with_a_merge_step_match_one_task(corpus, curate_config):
    single = run_curation(curate_config(str(corpus), output="single"))
    for stage, tasks in (("filter", (0, 1, 2)), ("buckets", (1, 0, 2)), ("clusters", (0,)), ("write", (2, 0, 1))):
        for task in tasks:
            multi = run_curation(
                curate_config(
                    str(corpus), output="multi", stage=stage, task_index=task, num_tasks=3, dedup__partitions=4
                )
            )
    assert multi == single
    assert output_files(
        Path(curate_config(str(corpus), output="multi").output_dir)
    ) == output_files(  # 4 partitions vs auto's 1
        Path(curate_config(str(corpus), output="single").output_dir)
    )


def test_stage_order_is_enforced_and_tasks_run_single_stages(corpus, curate_config):
    with pytest.raises(
        RuntimeError, match=r"stage=clusters needs the earlier stages finished: the filter stage has 3 of 3 units left"
    ):
        run_curation(curate_config(str(corpus), stage="clusters"))
    with pytest.raises(ValueError, match=r"num_tasks=2 with stage=all"):
        run_curation(curate_config(str(corpus), task_index=0, num_tasks=2))


def test_empty_c4_end_mark_is_a_config_error(corpus, curate_config):
    """An empty mark would end every line, and no marks none: both are named before any work."""
    for marks in ([""], []):
        with pytest.raises(
            ValueError, match=r"filters.c4.terminal_punctuation=.*: give one or more non-empty end marks"
        ):
            run_curation(curate_config(str(corpus), filters__c4__terminal_punctuation=marks))


def test_two_workers_match_one(corpus, curate_config):
    one = run_curation(curate_config(str(corpus), output="w1", workers=1, output__shard_size_mb=0.002))
    two = run_curation(curate_config(str(corpus), output="w2", workers=2, output__shard_size_mb=0.002))
    assert one == two and len(one["output"]["shards"]) > 3  # small shards: several per input file
    w1, w2 = (Path(curate_config(str(corpus), output=name).output_dir) for name in ("w1", "w2"))
    assert output_files(w1) == output_files(w2)


def test_filters_only_writes_output_directly(corpus, curate_config):
    config = curate_config(str(corpus), dedup__exact=False, dedup__near=False, output__write_removed=False)
    report = run_curation(config)
    assert [stage["stage"] for stage in report["stages"]][-1] == "language"
    assert report["output"]["documents"] == 15  # the two duplicates stay
    assert not list((Path(config.output_dir) / "removed").iterdir())


def test_task_from_slurm_or_torchrun_environment():
    assert resolve_task(
        None, None, {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "8"}
    ) == resolve_task(4, 8, {})
    assert resolve_task(None, None, {"RANK": "1", "WORLD_SIZE": "2"}).index == 1
    assert resolve_task(None, None, {}).count == 1
    with pytest.raises(ValueError, match="task_index=3 num_tasks=2"):
        resolve_task(3, 2, {})


def test_misspelt_option_fails_clearly():
    with pytest.raises(ConfigCompositionException, match="min_wrds"):
        compose_config("curate", CurateConfig, ["input=x", "output_dir=y", "filters.gopher_quality.min_wrds=3"])
    config = compose_config(
        "curate", CurateConfig, ["input=[a,b]", "output_dir=y", "filters.gopher_quality.min_words=null"]
    )
    assert list(config.input) == ["a", "b"] and config.filters.gopher_quality.min_words is None


def test_command_line(corpus, tmp_path):
    command = [
        sys.executable,
        "-m",
        "data_pipeline.curate",
        f"input={corpus}/pile",
        f"output_dir={tmp_path}/cli",
        "progress=false",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "dedup_near" in done.stdout and (tmp_path / "cli" / "report.json").exists()
    typo = subprocess.run(
        command + ["filters.c4.min_sentence=3"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert typo.returncode != 0 and "min_sentence" in typo.stderr


def test_code_keeps_indentation_and_tabs_byte_for_byte(tmp_path, files, curate_config):
    """Curation with the prose rules off (as for a code corpus): the default normalization
    must not touch indentation, tabs, in-line spaces or blank lines."""
    code = (
        "    import os\n\n\ndef f(x):\n    if x:\n\treturn  x  # two spaces\n\t\t\n"
        "\\begin{align}\n  a &= b \\\\\n\\end{align}\n"
    )
    corpus = files.jsonl(tmp_path / "code" / "code.jsonl", [{"text": code, "meta": {"id": "code-0"}}])
    off = {f"filters__{name}__enabled": False for name in ("gopher_repetition", "gopher_quality", "c4", "language")}
    config = curate_config(str(corpus), **off)
    report = run_curation(config)
    (kept,) = records(Path(config.output_dir), "part-*.jsonl.zst")
    assert kept["text"].encode() == code.encode()
    assert report["normalize_changes"] == {}


def test_c4_keeps_an_indented_blank_line_separated_passage_byte_for_byte(tmp_path, prose, files, curate_config):
    """Every line passes C4: the page comes out of curation as it went in (issue 14's lossless
    normalization and the C4 line rule together)."""
    paragraphs = [paragraph.split("\n") for paragraph in prose(4).split("\n\n")]
    page = "\n\n".join(
        [
            "\n".join("    " + line for line in paragraphs[0]),  # indented
            "\n".join("\t" + line + "  " for line in paragraphs[1]),  # tabs, trailing spaces
            "\n".join(paragraphs[2]),
        ]
    )
    junk = page + "\n\nSkip to content\nShare this"  # lines C4 removes, for contrast
    corpus = files.jsonl(
        tmp_path / "page" / "page.jsonl",
        [{"text": page, "meta": {"id": "page"}}, {"text": junk, "meta": {"id": "junk"}}],
    )
    config = curate_config(str(corpus), dedup__exact=False, dedup__near=False)
    run_curation(config)
    kept = {record["id"]: record["text"] for record in records(Path(config.output_dir), "part-*.jsonl.zst")}
    assert kept["page"].encode() == page.encode()
    assert kept["junk"].encode() == page.encode()
