"""The learned quality filter: training (held-out precision and recall, reproducibility, every
option's effect), the score against a brute-force reference, bad model files, and the filter in
curation (threshold, score-only, and keep_fraction decided globally: the same kept set for any
number of units and workers)."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xxhash

from data_pipeline.curate.cli import run_curation
from data_pipeline.filters.quality import score_bin
from data_pipeline.filters.quality_model import load_model
from data_pipeline.filters.quality_train import TrainQualityConfig, train_quality
from data_pipeline.io.writers import iter_shard

REPO = Path(__file__).resolve().parents[3]
WORDS = "river garden music village letter teacher history morning window mountain paper story family".split()
STOP = "the of and to with that have be a in".split()
OTHER_FILTERS_OFF = {
    f"filters__{name}__enabled": False for name in ("gopher_repetition", "gopher_quality", "c4", "language")
}


def good_text(seed: int) -> str:
    rng = random.Random(seed)
    sentences = [
        " ".join(rng.choice(WORDS + STOP * 2) for _ in range(rng.randint(8, 14))).capitalize() + "."
        for _ in range(rng.randint(4, 9))
    ]
    return " ".join(sentences)


def junk_text(seed: int) -> str:
    rng = random.Random(seed)
    if seed % 2:  # code
        return "\n".join(
            f"int v{rng.randint(0, 99)} = f({rng.randint(0, 9)}); {{ x[{i}] += 0x{rng.randint(0, 255):02x}; }}"
            for i in range(rng.randint(5, 12))
        )
    return "\n".join(
        f"{rng.choice(WORDS)}-{rng.randint(0, 999)} | {rng.randint(0, 99)}.{rng.randint(0, 9)} | "
        f"{rng.choice(WORDS).upper()}"
        for _ in range(rng.randint(5, 12))
    )


def write_set(folder: Path, make, seeds: range, prefix: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "docs.jsonl").write_text(
        "".join(json.dumps({"text": make(seed), "id": f"{prefix}-{seed}"}) + "\n" for seed in seeds)
    )
    return folder


@pytest.fixture(scope="module")
def training_sets(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("quality")
    return write_set(root / "pos", good_text, range(200), "good"), write_set(
        root / "neg", junk_text, range(200), "junk"
    )


def small_config(training_sets, output: Path, **settings) -> TrainQualityConfig:
    positives, negatives = training_sets
    return TrainQualityConfig(
        positives=str(positives),
        negatives=str(negatives),
        output=str(output),
        **{"buckets": 4096, "dim": 8, "epochs": 3, **settings},
    )


@pytest.fixture(scope="module")
def model_file(training_sets, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "quality.npz"
    train_quality(small_config(training_sets, path))
    return path


# ---------------------------------------------------------------- training


def test_training_learns_measures_held_out_and_is_reproducible(training_sets, model_file, tmp_path, capsys):
    header = load_model(str(model_file)).header
    heldout = header["training"]["heldout"]
    assert heldout["documents"] > 20 and heldout["precision"] >= 0.95 and heldout["recall"] >= 0.95
    # zero output weights at the start: every document scores 0.5, a log loss of ln 2
    assert header["training"]["training"]["log_loss"] < 0.5 * math.log(2)
    again = tmp_path / "again.npz"
    train_quality(small_config(training_sets, again))
    assert again.read_bytes() == model_file.read_bytes()
    printed = capsys.readouterr().out
    assert (
        f"heldout: {heldout['documents']:,} documents" in printed and f"precision {heldout['precision']:.3f}" in printed
    )
    other_seed = tmp_path / "seed.npz"
    train_quality(small_config(training_sets, other_seed, seed=1))
    assert load_model(str(other_seed)).header["sha256"] != header["sha256"]


def test_score_matches_a_brute_force_reference(model_file):
    """The mean of every feature occurrence's row (Python integers for the hashes, float64 sums)
    against the model's weighted distinct rows."""
    model = load_model(str(model_file))
    mask = 2**64 - 1

    def mix(value: int) -> int:  # splitmix64's finalizer
        value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & mask
        value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & mask
        return value ^ (value >> 31)

    for text in (good_text(1000), junk_text(1001), "One word", ""):
        tokens = [xxhash.xxh64_intdigest(token.lower().encode()) for token in re.findall(r"\w+|[^\w\s]", text)]
        bigrams = [mix((first * 0x9E3779B97F4A7C15 + second) & mask) for first, second in zip(tokens, tokens[1:])]
        rows = [feature % model.buckets for feature in tokens + bigrams]
        vector = model.embeddings[rows].astype(np.float64).mean(axis=0) if rows else np.zeros(model.embeddings.shape[1])
        logit = vector @ model.output[:-1].astype(np.float64) + float(model.output[-1])
        assert model.score_text(text) == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-5)


@pytest.mark.parametrize(
    "setting, value",
    [
        ("buckets", 1024),
        ("dim", 4),
        ("word_ngrams", 1),
        ("epochs", 1),
        ("lr", 0.05),
        ("heldout_fraction", 0.5),
        ("heldout_fraction", 0.0),
    ],
)
def test_every_training_option_has_its_effect(training_sets, model_file, tmp_path, setting, value):
    base = load_model(str(model_file))
    train_quality(small_config(training_sets, tmp_path / "m.npz", **{setting: value}))
    model = load_model(str(tmp_path / "m.npz"))
    metrics, base_metrics = model.header["training"], base.header["training"]
    if setting in ("buckets", "dim"):
        assert model.embeddings.shape == ((1024, 8) if setting == "buckets" else (4096, 4))
    elif setting == "word_ngrams":  # a bag of words: the order of the tokens no longer matters
        text = good_text(7)
        shuffled = " ".join(sorted(text.split(" ")))
        assert model.score_text(text) == pytest.approx(model.score_text(shuffled), abs=1e-6)
        assert base.score_text(text) != pytest.approx(base.score_text(shuffled), abs=1e-6)
    elif setting in ("epochs", "lr"):  # fewer steps, smaller steps: the training loss stays higher
        assert metrics["training"]["log_loss"] > base_metrics["training"]["log_loss"]
    elif value:
        assert metrics["heldout"]["documents"] > 1.5 * base_metrics["heldout"]["documents"]
    else:
        assert "heldout" not in metrics and metrics["training"]["documents"] == 400


def test_training_errors_name_the_setting(training_sets, tmp_path):
    with pytest.raises(ValueError, match=r"dim=0: need >= 1"):
        train_quality(small_config(training_sets, tmp_path / "m.npz", dim=0))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "none.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"negatives=.*empty: no document read"):
        train_quality(dataclasses.replace(small_config(training_sets, tmp_path / "m.npz"), negatives=str(empty)))
    command = [
        sys.executable,
        "-m",
        "data_pipeline.train_quality",
        f"positives={training_sets[0]}",
        f"negatives={tmp_path / 'nothing'}",
        f"output={tmp_path / 'm.npz'}",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert (
        done.returncode == 1
        and done.stderr.count("\n") == 1
        and "error: input entry" in done.stderr
        and "nothing" in done.stderr
    )
    typo = subprocess.run(command[:3] + ["epoch=3"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert typo.returncode == 1 and "did you mean epochs" in typo.stderr


def test_bad_model_files_are_errors_naming_the_file(model_file, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"filters.quality.model=.*missing.npz: no such file"):
        load_model(str(tmp_path / "missing.npz"))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(model_file.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"cut.npz: not a quality model file"):
        load_model(str(cut))
    with np.load(model_file) as arrays:
        edited = {name: arrays[name].copy() for name in arrays.files}
    edited["output"][0] += 1
    np.savez(tmp_path / "edited.npz", **edited)
    with pytest.raises(ValueError, match=r"edited.npz: the weights do not match the header's sha256"):
        load_model(str(tmp_path / "edited.npz"))
    np.savez(tmp_path / "other.npz", header=np.frombuffer(b'{"format": "x"}', dtype=np.uint8))
    with pytest.raises(ValueError, match=r"other.npz: not a quality model file"):
        load_model(str(tmp_path / "other.npz"))


# ---------------------------------------------------------------- in curation


def mixed_corpus(folder: Path, count: int = 60) -> Path:
    """One uncompressed file (so unit_size_mb can cut it into many units): prose and junk."""
    folder.mkdir(parents=True, exist_ok=True)
    records = [
        {"text": (good_text if seed % 3 else junk_text)(5000 + seed), "id": f"doc-{seed}"} for seed in range(count)
    ]
    path = folder / "mixed.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def outcome(output_dir: str) -> tuple[dict[str, float], dict[str, dict]]:
    """Kept id -> score, and removed id -> record."""
    out = Path(output_dir)
    kept = {
        r["id"]: r["meta"]["quality_score"] for path in sorted(out.glob("part-*.jsonl.zst")) for r in iter_shard(path)
    }
    removed = {
        r["id"]: r
        for path in sorted((out / "removed").glob("*.jsonl.zst"))
        for r in iter_shard(path)
        if "id" in r and "reason" in r
    }
    return kept, removed


def test_threshold_and_score_only(training_sets, model_file, tmp_path, curate_config):
    corpus = mixed_corpus(tmp_path / "corpus")
    scored = curate_config(str(corpus), output="scored", filters__quality__model=str(model_file), **OTHER_FILTERS_OFF)
    run_curation(scored)
    scores, removed = outcome(scored.output_dir)
    assert len(scores) == 60 and not removed  # no decision: every document scored and kept
    assert min(scores[f"doc-{i}"] for i in range(60) if i % 3) > 0.5 > max(scores[f"doc-{i}"] for i in range(0, 60, 3))

    config = curate_config(
        str(corpus), filters__quality__model=str(model_file), filters__quality__threshold=0.5, **OTHER_FILTERS_OFF
    )
    report = run_curation(config)
    kept, removed = outcome(config.output_dir)
    assert set(kept) == {f"doc-{i}" for i in range(60) if i % 3} and kept == {i: scores[i] for i in kept}
    assert {record["reason"] for record in removed.values()} == {"quality:below_threshold"}
    assert all(record["meta"]["quality_score"] < 0.5 for record in removed.values())
    assert {stage["stage"]: stage["removed"] for stage in report["stages"]}["quality"] == 20

    retrained = tmp_path / "retrained.npz"  # a model file changed under the same name: another run
    retrained.write_bytes(model_file.read_bytes())
    config = curate_config(str(corpus), output="rerun", filters__quality__model=str(retrained), **OTHER_FILTERS_OFF)
    run_curation(config)
    train_quality(small_config(training_sets, retrained, seed=5))
    with pytest.raises(ValueError, match=r"the quality_model_sha256"):
        run_curation(config)


@pytest.mark.parametrize("dedup", [False, True], ids=["filters_only", "with_dedup"])
def test_keep_fraction_is_global_and_the_same_for_any_units_and_workers(model_file, tmp_path, curate_config, dedup):
    corpus = mixed_corpus(tmp_path / "corpus", count=90)
    settings = {
        "filters__quality__model": str(model_file),
        "filters__quality__keep_fraction": 0.3,
        "dedup__exact": dedup,
        "dedup__near": dedup,
        **OTHER_FILTERS_OFF,
    }
    one = curate_config(str(corpus), output="one", **settings)
    # ~10 units; 2 workers once (each stage starts its own: seconds on a busy machine)
    many = curate_config(str(corpus), output="many", workers=1 if dedup else 2, unit_size_mb=0.004, **settings)
    report_one, report_many = run_curation(one), run_curation(many)
    assert len(list((Path(many.output_dir) / "_work" / "done" / "filter").glob("*.json"))) >= 8
    for report in (report_one, report_many):  # output shards follow the units
        report["output"].pop("shards")
    assert report_one == report_many
    outputs = [
        [record for path in sorted(Path(c.output_dir).glob("part-*")) for record in iter_shard(path)]
        for c in (one, many)
    ]
    assert outputs[0] == outputs[1]  # the same documents in the same order, byte for byte
    kept, removed = outcome(one.output_dir)
    # brute force: the kept documents are the top of the corpus by score, at least 30 % of it,
    # more only by ties of the last bin
    every = {**kept, **{doc_id: record["meta"]["quality_score"] for doc_id, record in removed.items()}}
    ranked = sorted(every, key=every.get, reverse=True)
    assert set(ranked[: len(kept)]) == set(kept) and len(every) == 90
    assert len(kept) >= 27 and score_bin(every[ranked[26]]) == min(score_bin(score) for score in kept.values())
    assert {record["reason"] for record in removed.values()} == {"quality:below_keep_fraction"}
    quality = next(stage for stage in report_one["stages"] if stage["stage"] == "quality")
    assert (
        quality["removed"]
        == 90 - len(kept)
        == report_one["quality_cut"]["documents_scored"] - report_one["quality_cut"]["documents_kept"]
    )


def test_quality_settings_are_checked_before_any_work(model_file, tmp_path, curate_config):
    corpus = mixed_corpus(tmp_path / "corpus", count=3)
    cases = [
        ({"filters__quality__keep_fraction": 0.5}, r"need filters.quality.model"),
        (
            {
                "filters__quality__model": str(model_file),
                "filters__quality__keep_fraction": 0.5,
                "filters__quality__threshold": 0.5,
            },
            "not both",
        ),
        (
            {"filters__quality__model": str(model_file), "filters__quality__keep_fraction": 0.0},
            r"keep_fraction=0.0: need a fraction in \(0, 1\]",
        ),
        (
            {"filters__quality__model": str(model_file), "filters__quality__threshold": 1.5},
            r"threshold=1.5: need a score in \[0, 1\]",
        ),
        ({"filters__quality__model": str(tmp_path / "gone.npz")}, r"gone.npz: no such file"),
        ({"filters__c4__bad_words": str(tmp_path / "gone.txt")}, r"filters.c4.bad_words=.*gone.txt: cannot read"),
        ({"stage": "quality"}, r"stage=quality without filters.quality.keep_fraction"),
    ]
    for settings, message in cases:
        with pytest.raises(ValueError, match=message):
            run_curation(curate_config(str(corpus), output="x", **settings))
    command = [
        sys.executable,
        "-m",
        "data_pipeline.curate",
        f"input={corpus}",
        f"output_dir={tmp_path / 'cli'}",
        f"filters.quality.model={tmp_path / 'gone.npz'}",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert (
        done.returncode == 1
        and done.stderr.startswith("error: invalid curate config")
        and "gone.npz: no such file" in done.stderr
    )


def test_keep_fraction_stage_by_stage_as_array_jobs_run_it(model_file, tmp_path, curate_config):
    corpus = mixed_corpus(tmp_path / "corpus", count=30)
    settings = {
        "filters__quality__model": str(model_file),
        "filters__quality__keep_fraction": 0.5,
        "dedup__exact": False,
        "dedup__near": False,
        **OTHER_FILTERS_OFF,
    }
    whole = run_curation(curate_config(str(corpus), output="whole", **settings))
    with pytest.raises(RuntimeError, match=r"stage=write needs the earlier stages finished: the filter stage"):
        run_curation(curate_config(str(corpus), output="staged", stage="write", **settings))
    assert run_curation(curate_config(str(corpus), output="staged", stage="filter", **settings)) is None
    assert run_curation(curate_config(str(corpus), output="staged", stage="quality", **settings)) is None
    staged = run_curation(
        curate_config(str(corpus), output="staged", stage="write", **settings)
    )  # the last one writes the report
    assert staged == whole and whole["output"]["documents"] == 15
