"""How the bundled sample corpus was made (run once by the maintainers; users never need it).

    python data_pipeline/sample_corpus/make_sample.py ../shared/corpus/pile data_pipeline/sample_corpus

It keeps public-domain text only (Jane Austen's novels and the King James Bible, taken from
the development corpus), adds documents the curation filters should drop, and plants exact
and near copies for the deduplication to find. Two shards are Pile-style ``.jsonl.zst``, one
C4-style ``.json.gz``, so the quickstart reads both formats.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import sys
from pathlib import Path

import zstandard

PUBLIC_DOMAIN = {"austen": 110, "kjv-bible": 450}  # documents kept per source

JUNK = [
    (
        "word-list",
        "\n".join(
            f"{w}" for w in "apple banana cherry damson elder fig grape hazel ivy juniper kale lime mango".split() * 8
        ),
    ),
    ("code", "def f(x):\n    return {k: v for k, v in x.items() if v}\n\nclass A:\n    pass\n" * 20),
    ("lorem", "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 40),
    (
        "javascript",
        "Please enable JavaScript to view this page.\nThis site uses cookies. Read our privacy policy.\n" * 15,
    ),
    ("repetition", "Buy cheap watches now. Best deals today.\n" * 60),
    ("catalog", "\n".join(f"item-{i:04d} | SKU {i * 7919 % 10000:04d} | $ {i % 97}.99" for i in range(200))),
    ("bullets", "\n".join(f"- point {i}" for i in range(120))),
    ("short", "Hello there."),
    ("symbols", "#### ### ## # ... ... ... !!! ??? ***\n" * 30),
    (
        "other-language",
        "Der schnelle braune Fuchs springt über den faulen Hund. Es war einmal ein König, der hatte drei Töchter. "
        * 20,
    ),
]


def read_public_domain(pile_dir: Path) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {name: [] for name in PUBLIC_DOMAIN}
    for shard in sorted(pile_dir.glob("*.jsonl.zst")):
        with open(shard, "rb") as handle:
            for line in io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(handle), encoding="utf-8"):
                record = json.loads(line)
                name = record["meta"]["pile_set_name"]
                if name in found:
                    found[name].append(record)
    return found


def near_copy(text: str, rng: random.Random) -> str:
    """Change about 3% of the words: what a scraped copy with small edits looks like."""
    words = text.split(" ")
    for index in rng.sample(range(len(words)), max(1, len(words) // 33)):
        words[index] = words[index].upper()
    return " ".join(words)


def main(pile_dir: str, out_dir: str) -> None:
    rng = random.Random(0)
    found = read_public_domain(Path(pile_dir))
    documents = []
    for name, count in PUBLIC_DOMAIN.items():
        documents += rng.sample(found[name], count)
    for index, (kind, text) in enumerate(JUNK):
        documents.append({"text": text, "meta": {"pile_set_name": "junk", "id": f"junk-{index}-{kind}"}})
    originals = rng.sample(documents[: sum(PUBLIC_DOMAIN.values())], 30)
    for index, original in enumerate(originals):
        text = original["text"] if index < 15 else near_copy(original["text"], rng)
        kind = "exact" if index < 15 else "near"
        documents.append(
            {
                "text": text,
                "meta": {
                    "pile_set_name": original["meta"]["pile_set_name"],
                    "id": f"copy-{kind}-{index}",
                    "copy_of": original["meta"]["id"],
                },
            }
        )
    rng.shuffle(documents)
    out = Path(out_dir)
    third = len(documents) // 3
    for shard, part in enumerate((documents[:third], documents[third : 2 * third])):
        payload = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in part).encode()
        (out / f"pile-{shard:05d}.jsonl.zst").write_bytes(zstandard.ZstdCompressor(level=19).compress(payload))
    with gzip.open(out / "c4-00000.json.gz", "wt", encoding="utf-8") as handle:
        for d in documents[2 * third :]:
            record = {
                "text": d["text"],
                "url": f"https://example.org/{d['meta']['id']}",
                "timestamp": "2019-04-01T00:00:00Z",
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
