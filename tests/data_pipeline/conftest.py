"""Small hand-made corpora for the data_pipeline tests (nothing from ../shared): fixtures for every folder below."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest
import zstandard

from data_pipeline.curate.config import CurateConfig
from tests.data_pipeline.helpers import with_overrides

WORDS = """time people year way day man thing woman life child world school state family student
group country problem hand part place case week company system program question work government
number night point home water room mother area money story fact month lot right study book eye job
word business issue side kind head house service friend father power hour game line end member law
car city community name president team minute idea kid body information back parent face others
level office door health person art war history party result change morning reason research girl
guy moment air teacher force education garden river mountain window letter music paper village
""".split()
STOP_WORDS = "the of and to with that have be".split()
FRENCH = (
    "Le petit village se trouve au bord de la rivière, entre les collines et la forêt. "
    "Chaque matin, les habitants se retrouvent sur la place pour acheter du pain frais. "
) * 4


def english_sentence(rng: random.Random) -> str:
    words = []
    for _ in range(rng.randint(9, 14)):
        words.append(rng.choice(WORDS) if rng.random() < 0.7 else rng.choice(STOP_WORDS))
    return " ".join(words).capitalize() + "."


def english_document(seed: int, paragraphs: int = 3) -> str:
    """Plain English-like prose that passes every default filter."""
    rng = random.Random(seed)
    return "\n\n".join(
        "\n".join(" ".join(english_sentence(rng) for _ in range(2)) for _ in range(3)) for _ in range(paragraphs)
    )


def write_jsonl(path: Path, records: list, opener=open) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with opener(path, "wt", encoding="utf-8") as file:
        for record in records:
            file.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
    return path


def write_zst(path: Path, records: list) -> Path:
    data = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(zstandard.ZstdCompressor().compress(data))
    return path


def write_gz(path: Path, records: list) -> Path:
    return write_jsonl(path, records, opener=gzip.open)


def pile_records(prefix: str, seeds: range) -> list[dict]:
    return [
        {"text": english_document(seed), "meta": {"id": f"{prefix}-{seed}", "pile_set_name": "test"}} for seed in seeds
    ]


def make_config(tmp_path: Path, input_spec, output: str = "out", **overrides) -> CurateConfig:
    return with_overrides(
        CurateConfig(input=input_spec, output_dir=str(tmp_path / output), progress=False), **overrides
    )


class Files:
    """The writers above, for tests (pytest's importlib mode cannot import conftest)."""

    jsonl = staticmethod(write_jsonl)
    zst = staticmethod(write_zst)
    gz = staticmethod(write_gz)
    pile_records = staticmethod(pile_records)


@pytest.fixture
def files() -> type[Files]:
    return Files


@pytest.fixture
def curate_config(tmp_path: Path):
    """curate_config(input, output="out", section__key=value, ...): a CurateConfig for a test."""
    return lambda input_spec, output="out", **overrides: make_config(tmp_path, input_spec, output, **overrides)


@pytest.fixture
def prose():
    """english_document(seed): English-like prose that passes every default filter."""
    return english_document


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Three good shards in three formats, with planted exact and near duplicates across them
    and a few documents each filter removes."""
    root = tmp_path / "corpus"
    near_copy = english_document(3).split(" ")
    near_copy[10] = "zebra"  # one word in ~150: Jaccard of word 5-grams ~0.93
    pile_a = pile_records("a", range(0, 6)) + [
        {"text": "too short to keep.", "meta": {"id": "a-short"}},
        {"text": FRENCH, "meta": {"id": "a-fr"}},
    ]
    pile_b = pile_records("b", range(6, 10)) + [
        {"text": english_document(1), "meta": {"id": "b-exact-copy-of-a-1"}},
        {"text": " ".join(near_copy), "meta": {"id": "b-near-copy-of-a-3"}},
        {"text": "spam spam spam spam\n" * 40, "meta": {"id": "b-spam"}},
    ]
    c4 = [
        {"text": english_document(seed), "url": f"https://example.com/{seed}", "timestamp": "2020-01-01"}
        for seed in range(10, 13)
    ]
    write_zst(root / "pile" / "a.jsonl.zst", pile_a)
    write_zst(root / "pile" / "b.jsonl.zst", pile_b)
    write_gz(root / "c4" / "c4.json.gz", c4)
    return root
