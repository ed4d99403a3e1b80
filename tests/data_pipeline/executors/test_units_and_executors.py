"""Work units and executors: the same kept and removed documents for any number of units and
workers, on Ray and on submitit's Slurm executor, equal to a brute-force dedup reference; a
worker killed mid-unit fails the run at once and a rerun redoes that unit only."""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data_pipeline.curate.cli import run_curation
from data_pipeline.executors.config import SlurmConfig
from data_pipeline.executors.pool import run_unordered
from data_pipeline.executors.slurm import stage_resources, submitit_parameters
from data_pipeline.io.writers import iter_shard
from tests.data_pipeline.helpers import wait_for_worker_reading

REPO = Path(__file__).resolve().parents[3]


def outcome(out: Path) -> tuple[list, dict]:
    """Kept documents (id, text bytes) in output order, and removed duplicates id -> (survivor, kind)."""
    kept = [(r["id"], r["text"].encode()) for p in sorted(out.glob("part-*.jsonl.zst")) for r in iter_shard(p)]
    removed = {
        r["id"]: (r["duplicate_of"], r["reason"], r["text"].encode())
        for p in sorted((out / "removed").glob("dedup-*.jsonl.zst"))
        for r in iter_shard(p)
    }
    return kept, removed


def shingles(text: str) -> set:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + 5]) for i in range(max(1, len(words) - 4))}


def brute_force_removals(documents: list[tuple[str, bytes]]) -> dict[str, str]:
    """Today's rule, by brute force over every pair: copies (equal text, or word-5-gram Jaccard
    >= 0.8) form clusters whose earliest document survives."""
    cluster = list(range(len(documents)))

    def root(i: int) -> int:
        while cluster[i] != i:
            i = cluster[i]
        return i

    sets = [shingles(text.decode()) for _, text in documents]
    for j in range(len(documents)):
        for i in range(j):
            if documents[i][1] == documents[j][1] or len(sets[i] & sets[j]) >= 0.8 * len(sets[i] | sets[j]):
                a, b = sorted((root(i), root(j)))
                cluster[b] = a
    return {documents[j][0]: documents[root(j)][0] for j in range(len(documents)) if root(j) != j}


@pytest.fixture
def one_file_corpus(tmp_path, prose) -> Path:
    """One uncompressed JSON-lines file (cut into byte ranges), copies planted across it."""
    texts = [prose(seed) for seed in range(40)]
    near = texts[5].split(" ")
    near[20] = "zebra"
    texts[12] = texts[3]  # exact copies, in several units
    texts[30] = texts[3]
    texts[25] = " ".join(near)  # a near copy of 5
    texts[38] = texts[25]  # an exact copy of the near copy: one cluster of three
    path = tmp_path / "corpus" / "web.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    return path


def test_units_workers_ray_and_slurm_keep_and_remove_the_same_documents(one_file_corpus, curate_config):
    unit_mb = one_file_corpus.stat().st_size / 8 / 1e6 * 1.001  # 8 byte ranges
    settings = {
        "one": dict(workers=1),
        "eight": dict(workers=2, unit_size_mb=unit_mb, dedup__partitions=3),
        "ray": dict(unit_size_mb=unit_mb, executor__kind="ray", executor__ray__num_cpus=2),
        "slurm": dict(
            unit_size_mb=unit_mb,
            executor__kind="slurm",
            executor__slurm__cluster="local",
            executor__slurm__cpus_per_task=1,
            executor__slurm__max_array_tasks=3,
            dedup__partitions=16,
        ),
    }
    results = {}
    for name, overrides in settings.items():
        config = curate_config(str(one_file_corpus), output=name, **overrides)
        report = run_curation(config)
        results[name] = outcome(Path(config.output_dir)), report["output"]["documents"], report["output"]["bytes"]
        units = list((Path(config.output_dir) / "_work" / "done" / "filter").glob("*.done.json"))
        assert len(units) == (1 if name == "one" else 8)
    (kept, removed), *_ = results["one"]
    for name in settings:
        assert results[name] == results["one"], name
    assert {doc_id: survivor for doc_id, (survivor, *_) in removed.items()} == {
        "web.jsonl:13": "web.jsonl:4",
        "web.jsonl:31": "web.jsonl:4",
        "web.jsonl:26": "web.jsonl:6",
        "web.jsonl:39": "web.jsonl:6",
    }
    everything = sorted(
        kept + [(doc_id, text) for doc_id, (_, _, text) in removed.items()], key=lambda d: int(d[0].split(":")[1])
    )
    assert {doc_id: survivor for doc_id, (survivor, *_) in removed.items()} == brute_force_removals(everything)
    assert {doc_id: kind for doc_id, (_, kind, _) in removed.items()} == {
        "web.jsonl:13": "dedup:exact",
        "web.jsonl:31": "dedup:exact",
        "web.jsonl:26": "dedup:near",
        "web.jsonl:39": "dedup:near",
    }

    def output(name: str) -> Path:
        return Path(curate_config(str(one_file_corpus), output=name).output_dir)

    assert len(list((output("eight") / "_work" / "done" / "buckets").iterdir())) == 3  # dedup.partitions
    # slurm ran each stage as a job array through submitit, at most max_array_tasks=3 tasks each:
    # filter 3, buckets 3 (of 16 partitions), clusters 1, write 3, report 1
    assert len(list((output("slurm") / "_work" / "slurm").rglob("*_log.out"))) == 11


def edit_chain(text: str, length: int, rng: random.Random) -> list[str]:
    """text and copies each 3 words away from the previous one (word-5-gram Jaccard ~0.86 per
    step, ~0.5 end to end: the ends are one cluster only through the links between them)."""
    chain = [text]
    for _ in range(length - 1):
        words = chain[-1].split(" ")
        for index in rng.sample(range(len(words)), 3):
            words[index] = f"edit{rng.randrange(10**6)}"
        chain.append(" ".join(words))
    return chain


def test_duplicate_chains_across_key_partitions_cluster_as_in_one_partition(tmp_path, prose, curate_config):
    rng = random.Random(0)
    chains = [edit_chain(prose(100 + c), 5, rng) for c in range(4)]
    texts = [prose(seed) for seed in range(20)]
    for c, chain in enumerate(chains):  # a chain's links cross the file's units; its earliest document is a middle link
        for position, link in zip((2, 0, 4, 1, 3), chain):
            texts.insert(c + 6 * position, link)
    path = tmp_path / "corpus" / "chains.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    unit_mb = path.stat().st_size / 6 / 1e6 * 1.001  # 6 byte ranges
    results, removal_files, clusters = {}, {}, {}
    # 5 partitions; then their forests' rows (~2 per removed document) over dedup.cluster_rows=4: on disk
    for name, overrides in {
        "p1": dict(dedup__partitions=1),
        "on_disk": dict(dedup__partitions=5, dedup__cluster_rows=4),
        "p5": dict(dedup__partitions=5),
    }.items():
        config = curate_config(str(path), output=name, unit_size_mb=unit_mb, **overrides)
        run_curation(config)
        work = Path(config.output_dir) / "_work"
        results[name] = outcome(Path(config.output_dir))
        removal_files[name] = {p.name: p.read_bytes() for p in (work / "clusters").glob("*.npy")}
        clusters[name] = json.loads((work / "done" / "clusters" / "all.done.json").read_text())
        assert not (work / "components").exists()  # the scratch files are gone
    assert [clusters[name]["on_disk"] for name in ("p1", "on_disk", "p5")] == [False, True, False]
    assert clusters["on_disk"]["disk_steps"] >= 2 and clusters["on_disk"]["disk_partitions"] > 5
    kept, removed = results["p1"]
    assert results["p5"] == results["p1"] == results["on_disk"]
    assert (
        removal_files["on_disk"] == removal_files["p5"] and len(removal_files["p5"]) >= 4
    )  # byte for byte, every unit
    everything = sorted(
        kept + [(doc_id, text) for doc_id, (_, _, text) in removed.items()], key=lambda d: int(d[0].split(":")[1])
    )
    survivors = {doc_id: survivor for doc_id, (survivor, *_) in removed.items()}
    assert survivors == brute_force_removals(everything) and len(survivors) == 4 * 4
    # the clusters were cut across the 5 partitions: some partition saw only part of a chain
    work = Path(config.output_dir) / "_work" / "buckets"
    final = dict(np.concatenate([np.load(path) for path in (work.parent / "clusters").glob("*.npy")]).tolist())
    partial_views = [
        (removed_doc, survivor) for path in work.glob("*.npy") for removed_doc, survivor in np.load(path).tolist()
    ]
    assert len(partial_views) > len(final) and any(
        final[removed_doc] != survivor for removed_doc, survivor in partial_views
    )


def test_no_duplicates_means_no_pairs_and_a_trivial_cluster_step(tmp_path, files, curate_config):
    files.zst(tmp_path / "in" / "a.jsonl.zst", files.pile_records("a", range(0, 8)))
    config = curate_config(str(tmp_path / "in"), dedup__partitions=4)
    assert run_curation(config)["output"]["documents"] == 8
    clusters = json.loads((Path(config.output_dir) / "_work" / "done" / "clusters" / "all.done.json").read_text())
    assert clusters == {"removed": 0, "units_with_removals": 0, "on_disk": False, "disk_steps": 0, "disk_partitions": 0}
    partitions = [
        json.loads(path.read_text())
        for path in (Path(config.output_dir) / "_work" / "done" / "buckets").glob("*.done.json")
    ]
    assert len(partitions) == 4 and all(
        p["near_pairs"] == p["exact_pairs"] == p["forest_rows"] == 0 for p in partitions
    )
    assert not list((Path(config.output_dir) / "_work" / "clusters").iterdir())


def test_a_killed_worker_fails_the_run_at_once_naming_its_unit_and_a_rerun_redoes_only_it(tmp_path, files, prose):
    folder = tmp_path / "in"
    for first, name in enumerate("abc"):
        files.zst(folder / f"{name}.jsonl.zst", files.pile_records(name, range(100 + 3 * first, 103 + 3 * first)))
    distinct = [json.dumps({"text": prose(seed)}) for seed in range(50)]
    (folder / "slow.jsonl").write_text("\n".join(distinct * 20) + "\n")  # 1,000 documents: seconds of work
    command = [
        sys.executable,
        "-m",
        "data_pipeline.curate",
        f"input={folder}",
        f"output_dir={tmp_path}/out",
        "progress=false",
        "workers=2",
    ]
    run = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker = wait_for_worker_reading(run.pid, "slow.jsonl", timeout_s=120)
    os.kill(worker.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    _, stderr = run.communicate(timeout=60)
    assert run.returncode != 0 and time.monotonic() - killed_at < 10
    assert (
        "filter unit 00003 (slow.jsonl): the worker process killed by SIGKILL" in stderr and "out-of-memory" in stderr
    )
    markers = tmp_path / "out" / "_work" / "done" / "filter"
    done_before = {path.name: path.stat().st_mtime_ns for path in markers.glob("*.done.json")}
    assert "00003.done.json" not in done_before and len(done_before) == 3  # the others finished and stay

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert {
        path.name: path.stat().st_mtime_ns for path in markers.glob("*.done.json") if path.name in done_before
    } == done_before
    assert (markers / "00003.done.json").exists()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["output"]["documents"] == 9 + 50  # the slow file's 950 repeats are exact copies


def test_pool_results_and_a_failing_item_named():
    # math.sqrt: a picklable function whose import costs nothing in the spawned workers
    assert sorted(run_unordered(math.sqrt, [0, 1, 4], workers=2)) == [(0, 0.0), (1, 1.0), (2, 2.0)]
    with pytest.raises(ValueError, match=r"math domain error") as raised:  # the worker's exception, by type
        list(run_unordered(math.sqrt, [0, 1, -1, 4], workers=2, describe=lambda item: f"item {item}"))
    assert "in item -1; the worker's traceback" in raised.value.__notes__[0]


def test_slurm_resources_per_stage_reach_submitit():
    config = SlurmConfig(
        partition="cpu", mem_gb=8, time_min=60, stages={"clusters": {"mem_gb": 64, "cpus_per_task": 1}}
    )
    assert stage_resources(config, "filter")["mem_gb"] == 8 and stage_resources(config, "filter")["cpus_per_task"] == 8
    clusters = stage_resources(config, "clusters")
    assert clusters["mem_gb"] == 64 and clusters["cpus_per_task"] == 1 and clusters["partition"] == "cpu"
    parameters = submitit_parameters(clusters, "clusters", {"qos": "high"}, "afterok:42")
    assert parameters["slurm_partition"] == "cpu" and parameters["timeout_min"] == 60
    assert parameters["slurm_additional_parameters"] == {
        "qos": "high",
        "dependency": "afterok:42",
        "kill_on_invalid_dep": "yes",
    }
    import submitit

    executor = submitit.AutoExecutor(folder="/tmp/unused", cluster="slurm")  # checks every name against sbatch's
    executor.update_parameters(**parameters)
    with pytest.raises(ValueError, match=r"executor.slurm.stages.write: unknown setting memory"):
        stage_resources(SlurmConfig(stages={"write": {"memory": 3}}), "write")
