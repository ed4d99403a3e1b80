"""Training the SentencePiece tokenizer: lossless, special tokens fixed, transformers parity."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest
import sentencepiece as spm
import xxhash

import data_pipeline.tokenizer.sample
from data_pipeline.formats.special_tokens import SpecialTokens
from data_pipeline.formats.tokenizer_files import TokenizerFiles, tokenizer_identity
from data_pipeline.io.config import ReaderConfig
from data_pipeline.io.readers import BadInputError, InputSource
from data_pipeline.io.units import InputUnit, unit_bytes
from data_pipeline.tokenizer.hf_export import export_transformers_tokenizer
from data_pipeline.tokenizer.sample import (
    SampleSettings,
    TrainingSample,
    choose_units,
    cut_text,
    input_units,
)
from data_pipeline.tokenizer.train import TokenizerConfig, train_tokenizer

REPO = Path(__file__).resolve().parents[3]
WORDS = "the of and a to in is was for on that with as by at from data model token train shard text".split()

TRICKY_TEXTS = [
    "",
    "plain english, with digits 1234567890 and 3.14159",
    "emoji 🎉🚀 and a family 👨‍👩‍👧 and flags 🇺🇳",
    "中文文本和日本語のテキスト、한국어 텍스트",
    "mixed: Привет мир, مرحبا بالعالم, नमस्ते दुनिया, שלום",
    "controls \x00 \x07 \x1b[31m red \x7f and a BOM \ufeff inside",
    " leading space, then a long run" + " " * 40 + "and trailing   ",
    "\t\ttabs\tand\nnewlines\n\n\nand CRLF\r\n and CR\r alone",
    "line\u2028separator and paragraph\u2029separator and NEL\x85",
    "combining e\u0301 vs é, ligature ﬁ, full-width ＡＢＣ１２３, ½ and ℌ",
    "edge code points \uffff \U0010ffff \ufffd \U0001d54f",
    "literal specials <s> </s> <pad> <unk> <mask> <extra_id_0> <extra_id_99>",
    "\n",
    "    ",
]


def random_document(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(1, 6)):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 20))]
        words.append(str(rng.randint(0, 10_000)))
        lines.append(" ".join(words) + rng.choice([".", ",", "!", ":"]))
    return rng.choice(["\n", "\n\n", "\n    "]).join(lines)


def write_jsonl(path: Path, records: list[dict | str]) -> Path:
    """Records as JSON lines; a str is written as it is (for malformed lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as stream:
        for record in records:
            stream.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
    return path


@pytest.fixture(scope="module")
def documents() -> list[str]:
    rng = random.Random(0)
    return [random_document(rng) for _ in range(300)] + TRICKY_TEXTS


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, documents) -> Path:
    directory = tmp_path_factory.mktemp("corpus")
    half = len(documents) // 2
    for index, part in enumerate((documents[:half], documents[half:])):
        write_jsonl(directory / f"part-{index}.jsonl", [{"id": f"{index}-{n}", "text": t} for n, t in enumerate(part)])
    return directory


def tiny_config(corpus: Path, output_dir: Path, **overrides) -> TokenizerConfig:
    settings = dict(input=str(corpus), output_dir=str(output_dir), vocab_size=600, num_threads=1)
    return TokenizerConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, corpus) -> Path:
    output_dir = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(tiny_config(corpus, output_dir))
    return output_dir


@pytest.fixture(scope="module")
def processor(tokenizer_dir) -> spm.SentencePieceProcessor:
    return TokenizerFiles.load(tokenizer_dir).processor()


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_round_trip_is_exact(processor, text):
    assert processor.decode(processor.encode(text)) == text


def test_special_token_ids_are_fixed_and_recorded(tokenizer_dir, processor):
    special = SpecialTokens.load(tokenizer_dir)
    assert (special.unk_id, special.bos_id, special.eos_id, special.pad_id, special.mask_id) == (0, 1, 2, 3, 4)
    assert special.sentinel_ids == tuple(range(5, 105))
    assert special.vocab_size == processor.get_piece_size() == 600
    assert special.tokenizer_hash == tokenizer_identity(tokenizer_dir / "tokenizer.model")
    pieces = [processor.id_to_piece(i) for i in special.all_ids[:5]]
    assert pieces == ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]
    assert processor.id_to_piece(special.sentinel_ids[-1]) == "<extra_id_99>"


def test_plain_text_never_encodes_to_special_ids(tokenizer_dir, processor, documents):
    special = set(SpecialTokens.load(tokenizer_dir).all_ids)
    produced = {token for text in documents for token in processor.encode(text)}
    assert not produced & special


def test_transformers_tokenizer_matches_sentencepiece(tokenizer_dir, processor, documents, monkeypatch):
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    special = SpecialTokens.load(tokenizer_dir)
    assert (hf.pad_token_id, hf.bos_token_id, hf.eos_token_id, hf.unk_token_id, hf.mask_token_id) == special.all_ids[:5]
    for text in documents:
        assert hf.encode(text, add_special_tokens=False) == processor.encode(text), text
        assert hf.decode(processor.encode(text)) == text


def test_transformers_files_are_optional(tmp_path, tokenizer_dir, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    (tmp_path / "tokenizer.model").write_bytes((tokenizer_dir / "tokenizer.model").read_bytes())
    assert not export_transformers_tokenizer(tmp_path, SpecialTokens.load(tokenizer_dir))
    assert "transformers is not installed" in caplog.text
    assert not (tmp_path / "tokenizer.json").exists()


def trained_pieces(tokenizer_dir: Path) -> list[tuple[str, float]]:
    trained = spm.SentencePieceProcessor(model_file=str(tokenizer_dir / "tokenizer.model"))
    return [(trained.id_to_piece(i), trained.get_score(i)) for i in range(trained.get_piece_size())]


def test_sample_is_the_smallest_id_hashes_in_hash_order(tmp_path, documents):
    """Against a brute-force sort of all documents by their seeded id hash."""
    records = [{"id": f"doc-{n}", "text": text} for n, text in enumerate(documents[:300])]
    write_jsonl(tmp_path / "a.jsonl", records[::2])
    write_jsonl(tmp_path / "b.jsonl", records[1::2])
    sample = TrainingSample(input_units(str(tmp_path)), SampleSettings(40, 16384, 5, strict=True), 1, None)
    by_hash = sorted(records, key=lambda record: xxhash.xxh64_intdigest(record["id"].encode(), seed=5))
    assert list(sample) == [record["text"] for record in by_hash[:40]]
    assert (sample.documents, sample.texts) == (300, 300)


def test_sample_depends_on_document_ids_and_seed_not_on_shard_layout(tmp_path, documents):
    """The same documents in 2 shards and, reordered, in 3 shards train the same vocabulary
    from a 150-text sample; another seed draws another sample."""
    records = [{"id": f"doc-{n}", "text": text} for n, text in enumerate(documents)]
    half = len(records) // 2
    write_jsonl(tmp_path / "two" / "a.jsonl", records[:half])
    write_jsonl(tmp_path / "two" / "b.jsonl", records[half:])
    shuffled = random.Random(1).sample(records, len(records))
    for index in range(3):
        write_jsonl(tmp_path / "three" / f"{index}.jsonl", shuffled[index::3])
    trained = {}
    for layout, seed in (("two", 0), ("three", 0), ("two", 7)):
        output = tmp_path / f"out-{layout}-{seed}"
        train_tokenizer(tiny_config(tmp_path / layout, output, input_sentence_size=150, seed=seed, hf_export=False))
        trained[layout, seed] = trained_pieces(output)
    assert trained["two", 0] == trained["three", 0]
    assert trained["two", 0] != trained["two", 7]


def test_a_directory_is_read_for_its_shards_not_its_report_or_subfolders(tmp_path):
    """A curation output_dir: clean shards on top; report.json, removed/ and _work/ are not text to train on."""
    write_jsonl(tmp_path / "part-00000-0000.jsonl", [{"id": "kept", "text": "clean text"}])
    write_jsonl(tmp_path / "removed" / "filter-00000-0000.jsonl", [{"id": "gone", "text": "removed text"}])
    write_jsonl(tmp_path / "_work" / "filter" / "00000-0000.jsonl", [{"id": "waiting", "text": "not deduplicated"}])
    (tmp_path / "report.json").write_text(json.dumps({"documents": 1}, indent=2))
    assert [unit.source.name for unit in input_units(str(tmp_path))] == ["part-00000-0000.jsonl"]
    assert list(TrainingSample(input_units(str(tmp_path)), SampleSettings(10, 16384, 0, strict=True), 1, None)) == [
        "clean text"
    ]


@pytest.fixture(scope="module")
def many_units(tmp_path_factory, documents) -> Path:
    """The documents in 24 shards (24 input units) with 2 KB texts at most."""
    directory = tmp_path_factory.mktemp("many_units")
    records = [{"id": f"doc-{n}", "text": text} for n, text in enumerate(documents)]
    for index in range(24):
        write_jsonl(directory / f"shard-{index:02d}.jsonl", records[index::24])
    return directory


def opened_units(monkeypatch) -> list[str]:
    """The names of the input units the sample reads, as it opens them."""
    opened: list[str] = []
    read_unit = data_pipeline.tokenizer.sample.read_unit

    def counting_read_unit(unit, config):
        opened.append(unit.input_name)
        return read_unit(unit, config)

    monkeypatch.setattr(data_pipeline.tokenizer.sample, "read_unit", counting_read_unit)
    return opened


@pytest.mark.parametrize("factor", [None, 2.0, 4.0])
def test_sample_reads_a_subset_of_units_enough_for_factor_times_the_sample(monkeypatch, many_units, factor):
    """sample_units_factor: the units read hold at least factor × size × max_bytes bytes and no
    unit more than needed; the sample is the smallest id hashes of exactly those units."""
    opened = opened_units(monkeypatch)
    units = input_units(str(many_units))
    settings = SampleSettings(size=20, max_bytes=256, seed=3, strict=True)
    sample = list(TrainingSample(units, settings, 1, factor))
    read = [unit for unit in units if unit.input_name in opened]
    assert len(opened) == len(read) == len(set(opened))
    if factor is None:
        assert len(read) == len(units) == 24
    else:
        needed = factor * settings.size * settings.max_bytes
        sizes = sorted(unit_bytes(unit) for unit in read)
        assert sum(sizes) >= needed > sum(sizes) - sizes[0]  # not one unit more than needed
        assert len(read) < len(units)
    records = [json.loads(line) for unit in read for line in Path(unit.source.path).read_text().splitlines()]
    by_hash = sorted(records, key=lambda record: xxhash.xxh64_intdigest(record["id"].encode(), seed=3))
    expected = [piece for record in by_hash for piece in cut_text(record["text"], len(record["text"].encode()), 256)]
    assert sample == expected[:20]


def test_remote_hf_files_count_their_size_so_only_a_subset_is_read():
    """An hf: dataset's data files live on the Hub (hf://...): their sizes come from the file
    system, so sample_units_factor reads a subset of them (not every file, as with size 0)."""
    memory = fsspec.filesystem("memory")
    source = InputSource(0, "hf:someone/corpus", "hf:someone/corpus")
    units = []
    for index in range(10):
        memory.pipe(f"/corpus/part-{index}.json.gz", b"x" * (100 + index))
        units.append(InputUnit(index, source, data_file=f"memory://corpus/part-{index}.json.gz", name=f"part-{index}"))
    assert [unit_bytes(unit) for unit in units] == [100 + index for index in range(10)]
    chosen = choose_units(units, 250, seed=0)
    assert len(chosen) == 3  # 2 files hold < 250 bytes, 3 hold >= 250


def test_larger_factor_reads_more_units_and_another_seed_other_units(monkeypatch, many_units):
    units = input_units(str(many_units))
    reads = {}
    for factor, seed in ((2.0, 0), (4.0, 0), (2.0, 1)):
        opened = opened_units(monkeypatch)
        list(TrainingSample(units, SampleSettings(20, 256, seed, strict=True), 1, factor))
        reads[factor, seed] = set(opened)
    assert reads[2.0, 0] < reads[4.0, 0]
    assert reads[2.0, 0] != reads[2.0, 1]


def test_sample_and_pieces_are_the_same_for_1_and_2_workers(tmp_path, many_units):
    """A subset of the units, read in this process and on 2 worker processes."""
    trained = []
    for workers in (1, 2):
        config = tiny_config(
            many_units,
            tmp_path / f"workers-{workers}",
            vocab_size=500,
            input_sentence_size=100,
            max_sentence_length=256,
            sample_units_factor=1.0,
            workers=workers,
            hf_export=False,
        )
        train_tokenizer(config)
        trained.append(trained_pieces(tmp_path / f"workers-{workers}"))
    units = input_units(str(many_units))
    settings = SampleSettings(size=100, max_bytes=256, seed=0, strict=True)
    one, two = (TrainingSample(units, settings, workers, 1.0) for workers in (1, 2))
    assert list(one) == list(two)
    assert one.units_read == two.units_read < len(units)
    assert trained[0] == trained[1]


def test_training_is_reproducible_across_processes_folders_and_threads(tmp_path, corpus):
    """Fresh processes in other folders with other thread and worker counts, three times over:
    the same pieces and scores, and the same identity although tokenizer.model records its folder."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = []
    for index, threads in enumerate((1, 2, 1)):
        workdir = tmp_path / f"run-{index}"
        workdir.mkdir()
        command = [
            sys.executable,
            "-m",
            "data_pipeline.train_tokenizer",
            f"input={corpus}",
            f"output_dir=out-{index}",
            "vocab_size=600",
            "input_sentence_size=150",
            f"num_threads={threads}",
            f"workers={threads}",
            "hf_export=false",
        ]
        done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        runs.append(workdir / f"out-{index}")
    assert (runs[0] / "tokenizer.model").read_bytes() != (runs[1] / "tokenizer.model").read_bytes()  # paths differ
    assert all(trained_pieces(run) == trained_pieces(runs[0]) for run in runs)
    identities = {SpecialTokens.load(run).tokenizer_hash for run in runs}
    assert identities == {tokenizer_identity(runs[0] / "tokenizer.model")}


def test_identity_follows_what_the_tokenizer_does(tmp_path, tokenizer_dir):
    from sentencepiece import sentencepiece_model_pb2

    original = tokenizer_identity(tokenizer_dir / "tokenizer.model")
    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString((tokenizer_dir / "tokenizer.model").read_bytes())

    def identity_after(change) -> str:
        changed = sentencepiece_model_pb2.ModelProto()
        changed.CopyFrom(model)
        change(changed)
        path = tmp_path / "changed.model"
        path.write_bytes(changed.SerializeToString())
        return tokenizer_identity(path)

    def move_training_inputs(proto) -> None:
        proto.trainer_spec.model_prefix = "/elsewhere/tokenizer"
        proto.trainer_spec.num_threads = 7

    assert identity_after(move_training_inputs) == original
    assert identity_after(lambda proto: setattr(proto.pieces[300], "score", -1.5)) != original
    assert identity_after(lambda proto: setattr(proto.trainer_spec, "byte_fallback", False)) != original
    assert identity_after(lambda proto: setattr(proto.normalizer_spec, "add_dummy_prefix", True)) != original
    assert identity_after(lambda proto: setattr(proto.trainer_spec, "eos_id", 5)) != original


def test_bad_records_are_skipped_or_fail_under_strict(tmp_path, documents):
    good = [{"id": str(n), "text": text} for n, text in enumerate(documents)]
    corpus = write_jsonl(tmp_path / "corpus" / "bad.jsonl", [*good[:10], "{not json", {"id": "x"}, *good[10:]]).parent
    train_tokenizer(tiny_config(corpus, tmp_path / "lenient", hf_export=False))
    with pytest.raises(BadInputError, match=r"bad\.jsonl:11: invalid_json"):
        train_tokenizer(tiny_config(corpus, tmp_path / "strict", strict=True, hf_export=False))


def test_empty_texts_take_no_place_and_no_text_at_all_is_one_clear_error(tmp_path):
    write_jsonl(tmp_path / "corpus" / "empty.jsonl", [])
    write_jsonl(tmp_path / "corpus" / "blank.jsonl", [{"id": "a", "text": ""}, {"id": "b", "text": ""}])
    with pytest.raises(
        ValueError, match=r"no text to train on: the 2 input units read hold 2 documents, none with text"
    ):
        train_tokenizer(tiny_config(tmp_path / "corpus", tmp_path / "out", hf_export=False))
    write_jsonl(tmp_path / "corpus" / "text.jsonl", [{"id": "c", "text": "clean text"}])
    units = input_units(str(tmp_path / "corpus"))
    assert list(TrainingSample(units, SampleSettings(10, 16384, 0, strict=False), 1, None)) == ["clean text"]


def test_a_sample_short_of_its_size_names_sample_units_factor(many_units, caplog):
    units = input_units(str(many_units))
    settings = SampleSettings(size=200, max_bytes=256, seed=0, strict=True)
    with caplog.at_level("WARNING"):
        assert len(list(TrainingSample(units, settings, 1, 0.01))) < 200  # 0.01 × 200 × 256 bytes: one unit
    assert "of input_sentence_size=200 texts from 1 of 24 input units; raise sample_units_factor" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        list(TrainingSample(units, settings, 1, None))  # every unit read: nothing more to read
    assert "sample_units_factor" not in caplog.text


def test_reader_settings_choose_the_text_field_and_ids(tmp_path):
    """reader.text_key / reader.id_keys, as curation reads records (and reader.hf for hf: inputs)."""
    records = [{"key": f"k{n}", "content": f"text number {n}", "text": "not this"} for n in range(30)]
    write_jsonl(tmp_path / "corpus" / "part.jsonl", records)
    config = tiny_config(
        tmp_path / "corpus",
        tmp_path / "out",
        vocab_size=400,
        hf_export=False,
        reader=ReaderConfig(text_key="content", id_keys=["key"]),
    )
    train_tokenizer(config)
    settings = SampleSettings(30, 16384, 0, strict=True, reader=config.reader)
    sample = list(TrainingSample(input_units(config.input, config.reader.hf), settings, 1, None))
    by_key = sorted(records, key=lambda record: xxhash.xxh64_intdigest(record["key"].encode(), seed=0))
    assert sample == [record["content"] for record in by_key]


def test_too_small_vocabulary_names_the_setting(tmp_path, corpus):
    with pytest.raises(ValueError, match="vocab_size=300 is too small"):
        train_tokenizer(tiny_config(corpus, tmp_path, vocab_size=300))


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("input_sentence_size", 0, "input_sentence_size=0: .* set it >= 1"),
        ("sample_units_factor", 0.0, r"sample_units_factor=0.0: set it > 0 .* or null to read every input unit"),
        ("workers", -1, "workers=-1: set it >= 1, or 0 for all cores"),
    ],
)
def test_bad_sample_settings_name_the_setting(tmp_path, corpus, setting, value, message):
    with pytest.raises(ValueError, match=message):
        train_tokenizer(tiny_config(corpus, tmp_path, **{setting: value}))


@pytest.mark.parametrize("max_bytes", [4, 7, 16, 64])
def test_long_documents_are_cut_at_line_ends(max_bytes):
    text = "short\nline é中🎉\n\n" + "x" * 50 + "\nend"
    pieces = list(cut_text(text, len(text.encode()), max_bytes))
    assert "".join(pieces) == text
    assert all(len(piece.encode()) <= max_bytes for piece in pieces)


def test_command_line_writes_only_into_output_dir(tmp_path, corpus):
    command = [
        sys.executable,
        "-m",
        "data_pipeline.train_tokenizer",
        f"input={corpus}",
        "output_dir=out",
        "vocab_size=600",
        "hf_export=false",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert {"tokenizer.model", "tokenizer_meta.json", ".hydra"} <= {p.name for p in (tmp_path / "out").iterdir()}

    misspelt = subprocess.run(
        [*command, "vocab_sise=600"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert misspelt.returncode != 0
    assert "vocab_sise" in misspelt.stderr
