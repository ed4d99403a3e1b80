"""Decontamination in curation: task items planted verbatim and lightly edited into a corpus
of real text are found, clean documents are not, redaction keeps the rest of a document, and
bad task files are one-line errors naming the file and line."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from data_pipeline.curate.cli import run_curation
from data_pipeline.curate.config import CurateConfig
from data_pipeline.decontaminate.config import DecontaminateConfig
from data_pipeline.decontaminate.filter import Decontaminator
from data_pipeline.decontaminate.index import build_index
from data_pipeline.decontaminate.ngrams import normalized_words, words_with_spans
from data_pipeline.decontaminate.task_items import record_text
from data_pipeline.document import Document
from data_pipeline.io.writers import iter_shard

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "data_pipeline" / "sample_corpus" / "c4-00000.json.gz"  # 200 documents of real text
VOCABULARY = """atom orbit planet comet nebula quasar photon proton neutron enzyme protein cell membrane
tectonic plate magma basalt granite glacier delta estuary monsoon isotope catalyst polymer alloy
voltage current circuit resistor lever pulley friction inertia momentum velocity gravity tide eclipse
which what why how does the a of in is are by when most""".split()


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(VOCABULARY) for _ in range(words)).capitalize()


def write_tasks(folder: Path) -> tuple[Path, Path]:
    """20 multiple choice items (pretrain.evaluate's format) and 20 lm-evaluation-harness style ones."""
    rng = random.Random(7)
    folder.mkdir(parents=True, exist_ok=True)
    mc, harness = folder / "science_mc.jsonl", folder / "science_qa.jsonl"
    mc.write_text(
        "".join(
            json.dumps(
                {
                    "context": f"Question: {sentence(rng, 14)}?\nAnswer:",
                    "choices": [sentence(rng, 4) for _ in range(4)],
                    "label": rng.randrange(4),
                }
            )
            + "\n"
            for _ in range(20)
        )
    )
    harness.write_text(
        "".join(
            json.dumps({"question": sentence(rng, 12) + "?", "answer": sentence(rng, 6) + "."}) + "\n"
            for _ in range(20)
        )
    )
    return mc, harness


def edited(text: str, kind: int) -> str:
    """Light edits the normalization undoes: case, punctuation, whitespace."""
    if kind == 0:
        return text.upper().replace(" ", "  ")
    if kind == 1:
        return re.sub(r"[?.:]", "", text).replace(" ", "\n", 3)
    return re.sub(r" (\w+)", r", \1;", text, count=5).lower()


def items_of(path: Path) -> list[str]:
    return [record_text(json.loads(line)) for line in path.read_text().splitlines()]


def prose(rng: random.Random, sentences: int) -> str:
    return " ".join(sentence(rng, 9) + "." for _ in range(sentences))


def write_contaminated(path: Path, items: list[str]) -> None:
    """One document per item: text around the item, verbatim for even items, edited for odd."""
    rng = random.Random(11)
    with open(path, "w") as stream:
        for number, item in enumerate(items):
            planted = item if number % 2 == 0 else edited(item, number // 2 % 3)
            text = f"{prose(rng, 4)}\n{planted}\n{prose(rng, 4)}"
            stream.write(json.dumps({"id": f"planted-{number}", "text": text}) + "\n")


def filters_off(config: CurateConfig) -> CurateConfig:
    for name in ("language", "gopher_repetition", "gopher_quality", "c4"):
        getattr(config.filters, name).enabled = False
    config.dedup.exact = config.dedup.near = False
    config.progress = False
    return config


@pytest.fixture(scope="module")
def contaminated_corpus(tmp_path_factory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("decontaminate")
    tasks = write_tasks(root / "tasks")
    corpus = root / "corpus"
    corpus.mkdir()
    shutil.copy(SAMPLE, corpus / "c4-00000.json.gz")
    write_contaminated(corpus / "planted.jsonl", items_of(tasks[0]) + items_of(tasks[1]))
    return corpus, list(tasks)


def curate(corpus: Path, output: Path, tasks: list[Path], **decontaminate) -> dict:
    config = filters_off(CurateConfig(input=str(corpus), output_dir=str(output)))
    config.decontaminate = DecontaminateConfig(tasks=[str(task) for task in tasks], **decontaminate)
    return run_curation(config)


def kept_documents(output: Path) -> dict[str, str]:
    return {
        record["id"]: record["text"] for path in sorted(output.glob("part-*.jsonl.zst")) for record in iter_shard(path)
    }


def test_planted_items_are_found_and_clean_documents_kept(contaminated_corpus, tmp_path: Path) -> None:
    corpus, tasks = contaminated_corpus
    report = curate(corpus, tmp_path / "out", tasks, max_examples=3)
    kept = kept_documents(tmp_path / "out")
    planted_kept = [doc_id for doc_id in kept if doc_id.startswith("planted-")]
    clean_kept = [doc_id for doc_id in kept if not doc_id.startswith("planted-")]
    assert 1 - len(planted_kept) / 40 >= 0.95  # recall, verbatim and edited alike
    assert 1 - len(clean_kept) / 200 <= 0.005  # clean documents flagged
    stage = next(stage for stage in report["stages"] if stage["stage"] == "decontaminated")
    assert stage["reasons"] == {"science_mc": 20, "science_qa": 20}
    by_task = report["decontamination"]["tasks"]
    assert by_task["science_mc"]["documents"] == 20 and by_task["science_mc"]["items_matched"] == 20
    assert by_task["science_mc"]["items"] == 20 and by_task["science_mc"]["items_too_short"] == 0
    assert by_task["science_qa"]["item_lines"] == list(range(1, 21))
    assert by_task["science_mc"]["examples"][0] == {"document": "planted-0", "items": [1]}
    assert len(by_task["science_mc"]["examples"]) == 3  # max_examples
    removed = {
        record["id"]: record["reason"]
        for path in (tmp_path / "out" / "removed").glob("filter-*")
        for record in iter_shard(path)
    }
    assert removed["planted-25"] == "decontaminated:science_qa"


def test_redact_mode_cuts_the_item_and_keeps_the_rest(contaminated_corpus, tmp_path: Path) -> None:
    corpus, tasks = contaminated_corpus
    original = {
        json.loads(line)["id"]: json.loads(line)["text"] for line in (corpus / "planted.jsonl").read_text().splitlines()
    }
    report = curate(corpus, tmp_path / "out", tasks, mode="redact")
    kept = kept_documents(tmp_path / "out")
    assert len(kept) == 240 and report["decontamination"]["redacted_documents"] == 40  # the planted ones only
    for number in range(40):
        before, after = original[f"planted-{number}"], kept[f"planted-{number}"]
        head, tail = before.split("\n", 1)[0], before.rsplit("\n", 1)[1]
        assert after == f"{head}\n\n{tail}"  # the item cut out, from its first word to its last, the rest kept


def decontaminator(tmp_path: Path, items: list[str], **settings) -> Decontaminator:
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps({"text": item}) + "\n" for item in items))
    config = DecontaminateConfig(tasks=[str(task)], **settings)
    shutil.rmtree(tmp_path / "index", ignore_errors=True)
    build_index(config, tmp_path / "index")
    return Decontaminator(config, tmp_path / "index")


def test_ngram_and_min_words_settings(tmp_path: Path) -> None:
    item = "the quick brown fox jumps over the lazy sleeping dog near river banks today"  # 14 words
    fragment = Document("d", "Once more: quick brown fox jumps over the lazy sleeping dog.", {}, "x", 1)  # 9 of them
    assert decontaminator(tmp_path, [item])(fragment) is None  # no 13-gram of the item in it
    assert decontaminator(tmp_path, [item], ngram=8)(fragment) == "task"
    short = "brown fox jumps over"  # 4 words: one gram of its own, if min_words allows
    assert decontaminator(tmp_path, [short])(fragment) is None
    assert decontaminator(tmp_path, [short], min_words=4)(fragment) == "task"


def test_words_keep_the_characters_they_came_from() -> None:
    text = "Hello,  World!\n-- it's\tn-gram"
    words, spans = words_with_spans(text)
    assert words == normalized_words(text) == ["hello", "world", "its", "ngram"]
    assert [text[start:end] for start, end in spans] == ["Hello,", "World!", "it's", "n-gram"]
    text = "Café — «Déjà» VU_2\u3000naïve!"  # not ASCII: the expression, not the table
    assert normalized_words(text) == words_with_spans(text)[0] == ["café", "déjà", "vu_2", "naïve"]


@pytest.mark.parametrize(
    "content, message",
    [
        (None, r"missing\.jsonl: no such task file"),
        ("", r"missing\.jsonl: the task file is empty"),
        ('{"question": "a"}\n{"question": oops}\n', r"missing\.jsonl:2: not valid JSON"),
        ('{"question": "a"}\n{"label": 1}\n', r"missing\.jsonl:2: no text to check"),
    ],
)
def test_bad_task_files_name_the_file_and_line(tmp_path: Path, content: str | None, message: str) -> None:
    task = tmp_path / "missing.jsonl"
    if content is not None:
        task.write_text(content)
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "some text"}) + "\n")
    config = filters_off(CurateConfig(input=str(tmp_path / "in.jsonl"), output_dir=str(tmp_path / "out")))
    config.decontaminate.tasks = [str(task)]
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        run_curation(config)
    # the bad file did not claim output_dir: once it is mended, the same command runs there
    task.write_text(json.dumps({"question": "what is the capital of france"}) + "\n")
    assert run_curation(config) is not None


def test_command_line_error_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "some text"}) + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_pipeline.curate",
            f"input={tmp_path / 'in.jsonl'}",
            f"output_dir={tmp_path / 'out'}",
            f"decontaminate.tasks=[{tmp_path / 'nope.jsonl'}]",
            "decontaminate.mode=cut",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": ""},
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: invalid curate config:",
        "  decontaminate.mode=cut: choose remove or redact",
        f"  decontaminate.tasks: {tmp_path / 'nope.jsonl'}: no such task file "
        "(decontaminate.tasks / the evaluation task's path)",
    ]
