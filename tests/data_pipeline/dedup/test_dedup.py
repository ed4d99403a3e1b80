"""Exact and MinHash-LSH dedup on a small synthetic corpus with planted exact and near copies."""

import itertools
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xxhash

from data_pipeline.dedup import MinHashConfig, MinHasher, estimate_jaccard, exact_hash, find_duplicates
from data_pipeline.dedup.shingles import ShingleHasher

REPO_ROOT = Path(__file__).resolve().parents[3]
VOCABULARY = [f"w{i}" for i in range(3000)]


def random_document(rng: random.Random, num_words: int = 200) -> str:
    words = rng.choices(VOCABULARY, k=num_words)
    return " ".join(f"{word}." if index % 15 == 14 else word for index, word in enumerate(words))


def substitute_words(text: str, rng: random.Random, fraction: float) -> str:
    words = text.split(" ")
    for index in rng.sample(range(len(words)), int(len(words) * fraction)):
        words[index] = rng.choice(VOCABULARY) + "x"
    return " ".join(words)


def reformat(text: str) -> str:
    """Same words, other case, punctuation and line breaks: a copy in every normalized sense."""
    return text.upper().replace(".", "!").replace(" ", "\n  ", 5)


def word_ngrams(text: str, n: int = 5) -> set[tuple[str, ...]]:
    """Brute-force reference: the shingle set as a set of word tuples."""
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}


def true_jaccard(a: str, b: str) -> float:
    set_a, set_b = word_ngrams(a), word_ngrams(b)
    return len(set_a & set_b) / len(set_a | set_b)


@pytest.fixture(scope="module")
def planted_corpus() -> tuple[list[str], dict[int, int]]:
    """300 unrelated documents, then copies: texts and {copy row: original row}."""
    rng = random.Random(0)
    texts = [random_document(rng) for _ in range(300)]
    original_of = {}

    def plant(original: int, copy: str) -> None:
        original_of[len(texts)] = original
        texts.append(copy)

    for original in range(0, 40):
        plant(original, texts[original])
    for original in range(40, 80):
        plant(original, reformat(texts[original]))
    for original in range(80, 140):  # Jaccard ~0.9
        plant(original, substitute_words(texts[original], rng, 0.01))
    for original in range(140, 160):  # Jaccard ~0.73, and an exact copy: a cluster of three
        plant(original, substitute_words(texts[original], rng, 0.03))
        plant(original, texts[original])
    order = list(range(len(texts)))
    rng.shuffle(order)  # originals are not always the smaller row
    new_row = {old: new for new, old in enumerate(order)}
    return [texts[old] for old in order], {new_row[c]: new_row[o] for c, o in original_of.items()}


def dedup(texts: list[str], params: MinHashConfig | None = None) -> np.ndarray:
    hasher = MinHasher(params)
    signatures = hasher.signatures(texts)
    return find_duplicates(hasher.bands_of(signatures), [exact_hash(t) for t in texts], signatures=signatures)


def cluster_label(duplicate_of: np.ndarray) -> np.ndarray:
    return np.where(duplicate_of >= 0, duplicate_of, np.arange(len(duplicate_of)))


def test_exact_hash_is_xxh3_128_of_the_text():
    assert exact_hash("héllo") == xxhash.xxh3_128_digest("héllo".encode())
    assert len(exact_hash("")) == 16
    assert exact_hash("a") != exact_hash("a ")


def test_planted_corpus_precision_and_recall(planted_corpus):
    texts, original_of = planted_corpus
    label = cluster_label(dedup(texts))
    removed = set(np.flatnonzero(label != np.arange(len(texts))).tolist())
    # every planted copy points at its original, never at another copy: the root is the original
    true_root = np.array([original_of.get(row, row) for row in range(len(texts))])
    # a removal is correct when its kept row is in the same planted cluster
    correct = sum(true_root[row] == true_root[label[row]] for row in removed)
    assert correct / len(removed) >= 0.99
    assert correct / len(original_of) >= 0.96
    exact_copies = [c for c, o in original_of.items() if texts[c] == texts[o]]
    assert all(label[c] == label[original_of[c]] for c in exact_copies)
    close_copies = [c for c, o in original_of.items() if true_jaccard(texts[c], texts[o]) >= 0.85]
    assert len(close_copies) > len(exact_copies) + 40
    assert all(label[c] == label[original_of[c]] for c in close_copies)
    unrelated = set(range(len(texts))) - set(original_of) - set(original_of.values())
    assert all(label[row] == row and row not in label[list(removed)] for row in unrelated)


def test_reformatted_copies_have_identical_signatures():
    rng = random.Random(1)
    text = random_document(rng)
    variants = [text, reformat(text), text.replace("w1", "w\u0301\u0031")]  # + a combining accent
    signatures = MinHasher().signatures(variants)
    assert (signatures == signatures[0]).all()


def test_digit_runs_collapse_only_when_asked():
    texts = ["release 1.8.17 fixes a bug in the parser today", "release 1.9.12 fixes a bug in the parser today"]
    assert estimate_jaccard(*MinHasher().signatures(texts)) < 1
    collapsing = MinHasher(MinHashConfig(collapse_digit_runs=True))
    assert estimate_jaccard(*collapsing.signatures(texts)) == 1


def test_estimated_jaccard_is_close_to_true_jaccard():
    rng = random.Random(2)
    base = random_document(rng, 400)
    pairs = [(base, substitute_words(base, rng, fraction)) for fraction in (0.0, 0.01, 0.03, 0.06, 0.1, 0.2)]
    pairs.append((base, random_document(rng, 400)))
    hasher = MinHasher()
    errors = []
    for a, b in pairs:
        estimate = estimate_jaccard(*hasher.signatures([a, b]))
        errors.append(abs(estimate - true_jaccard(a, b)))
    # 112 permutations: standard deviation <= 0.05, so 0.15 is three of them
    assert max(errors) < 0.15
    assert np.mean(errors) < 0.06


def test_signature_is_the_minimum_over_all_shingles_whatever_the_batching():
    rng = random.Random(3)
    texts = [random_document(rng, 30_000), "", "one two", random_document(rng, 50)]
    hasher = MinHasher()
    shingles, offsets = ShingleHasher(5, seed=1, collapse_digit_runs=False).hash_batch(texts)
    bounds = np.append(offsets, len(shingles))
    a, b = hasher._multipliers, hasher._increments[:, 0]
    expected = [np.min(np.multiply.outer(shingles[lo:hi], a) + b, axis=0) for lo, hi in itertools.pairwise(bounds)]
    together = hasher.signatures(texts)
    one_by_one = np.concatenate([hasher.signatures([text]) for text in texts])
    assert (together == np.array(expected)).all()
    assert (one_by_one == together).all()


def test_documents_shorter_than_n_words_are_one_shingle():
    shingles, offsets = ShingleHasher(5, seed=1, collapse_digit_runs=False).hash_batch(
        ["a b", "a b c d e f", "", "A, b!"]
    )
    assert offsets.tolist() == [0, 1, 3, 4]
    assert shingles[0] == shingles[4]  # "a b" == "A, b!"
    assert shingles[0] not in shingles[1:3]


def test_band_hashes_shape_and_stability_across_processes():
    texts = ["the quick brown fox jumps over the lazy dog", "ça coûte 12 €", ""]
    params = MinHashConfig(num_bands=14, rows_per_band=8)
    bands = MinHasher(params).band_hashes(texts)
    assert bands.shape == (3, 14) and bands.dtype == np.uint64
    script = (
        "from data_pipeline.dedup import MinHasher, MinHashConfig;"
        f"print(MinHasher(MinHashConfig(num_bands=14, rows_per_band=8)).band_hashes({texts!r}).tolist())"
    )
    for hash_seed in ("0", "123"):
        child = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO_ROOT,
            env={"PYTHONHASHSEED": hash_seed},
        )
        assert child.stdout.strip() == str(bands.tolist())
    assert (MinHasher(MinHashConfig(num_bands=14, rows_per_band=8, seed=2)).band_hashes(texts) != bands).all()


def test_survivor_is_the_smallest_row_of_its_cluster():
    keys = np.arange(8 * 2, dtype=np.uint64).reshape(8, 2)  # every row unique in both bands
    keys[5, 0] = keys[7, 0]  # 7-5 in band 0
    keys[2, 1] = keys[5, 1]  # 5-2 in band 1: 2, 5 and 7 are one cluster
    exact = [bytes([row]) * 16 for row in range(8)]
    exact[6] = exact[3]
    assert find_duplicates(keys, exact).tolist() == [-1, -1, -1, -1, -1, 2, 3, 2]
    order = np.random.default_rng(0).permutation(8)  # shuffled row i is original row order[i]
    label = cluster_label(find_duplicates(keys[order], [exact[row] for row in order]))
    clusters = {frozenset(order[label == survivor].tolist()) for survivor in set(label.tolist())}
    assert clusters == {frozenset(c) for c in ({0}, {1}, {4}, {2, 5, 7}, {3, 6})}
    assert all(survivor == np.flatnonzero(label == survivor).min() for survivor in label)


def test_verification_drops_candidates_with_low_estimated_jaccard():
    keys = np.array([[1, 2], [1, 3]], dtype=np.uint64)
    signatures = np.array([[0, 1, 2, 3], [0, 5, 6, 7]], dtype=np.uint64)  # estimated Jaccard 0.25
    assert find_duplicates(keys).tolist() == [-1, 0]
    assert find_duplicates(keys, signatures=signatures).tolist() == [-1, -1]
    assert find_duplicates(keys, signatures=signatures, min_jaccard=0.2).tolist() == [-1, 0]


def test_empty_input_and_documents_without_words():
    hasher = MinHasher()
    assert find_duplicates(hasher.band_hashes([]), []).shape == (0,)
    texts = ["...", "a real sentence of several words here", "", "!?"]
    # no words at all is one shingle, the same for all of them: they are one cluster
    assert find_duplicates(hasher.band_hashes(texts)).tolist() == [-1, -1, 0, 0]


@pytest.mark.parametrize("setting", ["ngram_size", "num_bands", "rows_per_band"])
def test_one_minhash_config_checked_once_for_the_api_and_the_command(setting):
    from data_pipeline.dedup.config import DedupConfig

    bad = MinHashConfig(**{setting: 0})
    with pytest.raises(ValueError, match=f"dedup.minhash=.*{setting}=0.*must be >= 1"):
        MinHasher(bad)
    assert DedupConfig(minhash=bad).problems() == bad.problems() != []
    assert DedupConfig(minhash=bad, near=False).problems() == []  # not read without near dedup


def test_keys_on_disk_hold_ids_of_any_length_and_codes_past_int64(tmp_path):
    from data_pipeline.dedup.components import removals
    from data_pipeline.dedup.config import DedupConfig
    from data_pipeline.dedup.keys import KeyStore, UnitKeyWriter, doc_codes

    ids = ["a", "x" * 5000, "lone \ud800", "b"]
    writer = UnitKeyWriter(tmp_path / "00003", 3, DedupConfig(batch_size=3), partitions=2)
    for doc_id in ids:
        writer.add(doc_id, f"text of {doc_id[:10]}")
    assert writer.finish() == 4
    assert (tmp_path / "00003" / "ids.bin").stat().st_size < 5100  # no fixed-width id array
    store = KeyStore(tmp_path, permutations=112)
    assert store.ids(doc_codes(3, np.array([2, 1, 0, 3]))) == [ids[2], ids[1], ids[0], ids[3]]
    assert store.signatures(doc_codes(3, np.array([0, 3]))).shape == (2, 112)
    # document codes of unit 2**23 are above 2**62: no `a * n + b` pair code to overflow
    late = doc_codes(2**23, np.array([9, 5, 7]))
    removed, survivors = removals(np.array([[late[0], late[1]], [late[2], late[1]]], dtype=np.uint64))
    assert removed.tolist() == [late[2], late[0]] and survivors.tolist() == [late[1], late[1]]


def brute_force_survivors(pairs: list[tuple[int, int]]) -> dict[int, int]:
    """Removed document -> the smallest document of its cluster, by a plain union-find."""
    parent: dict[int, int] = {}

    def root(node: int) -> int:
        while parent.setdefault(node, node) != node:
            node = parent[node]
        return node

    for a, b in pairs:
        low, high = sorted((root(a), root(b)))
        parent[high] = low
    return {node: root(node) for node in list(parent) if root(node) != node}


@pytest.mark.parametrize("shards", [1, 2, 7])
def test_clusters_merged_from_pair_shards_equal_the_clusters_of_all_pairs(shards, monkeypatch):
    from data_pipeline.dedup import components
    from data_pipeline.dedup.components import forest, merged_forest, removals

    monkeypatch.setattr(components, "_MERGE_ROWS", 8)  # merge while reading, not only at the end
    rng = np.random.default_rng(shards)
    codes = np.unique(rng.integers(2**63, 2**64 - 1, size=400, dtype=np.uint64, endpoint=True))  # past int64
    chains = [
        rng.choice(len(codes), size=rng.integers(2, 12), replace=False) for _ in range(40)
    ]  # paths in random order
    links = np.array([(a, b) for chain in chains for a, b in zip(chain[:-1], chain[1:])])
    pairs = codes[links]
    shard_of_pair = rng.integers(0, shards, size=len(pairs))  # a chain's links spread over the shards
    merged = merged_forest(forest(pairs[shard_of_pair == shard]) for shard in range(shards))
    expected = brute_force_survivors([tuple(pair) for pair in pairs.tolist()])
    assert dict(merged.tolist()) == expected
    assert merged[:, 0].tolist() == sorted(expected)  # sorted by removed document
    assert merged.tolist() == np.stack(removals(pairs), axis=1).tolist()  # the one-unit result
    assert merged_forest([]).shape == (0, 2)


def test_a_partition_is_read_from_each_run_without_mapping_the_run(tmp_path):
    from data_pipeline.dedup.config import DedupConfig
    from data_pipeline.dedup.keys import RECORDS, UnitKeys, UnitKeyWriter

    writer = UnitKeyWriter(tmp_path / "00000", 0, DedupConfig(batch_size=4), partitions=3)
    for row in range(10):
        writer.add(f"d{row}", f"document number {row} with some words in it")
    writer.finish()
    keys = UnitKeys(tmp_path / "00000", permutations=112)
    for kind in ("bands", "exact"):
        runs = sorted((tmp_path / "00000").glob(f"{kind}-????.npy"))
        whole = [np.load(path) for path in runs]
        for partition in range(3):
            slices = keys.partition_slices(kind, partition)
            read = [np.empty(piece.count, RECORDS[kind]) for piece in slices]
            for piece, out in zip(slices, read):
                piece.read_into(out)
            index = [np.load(path.with_name(path.stem + ".index.npy")) for path in runs]
            assert [r.tolist() for r in read] == [
                w[i[partition] : i[partition + 1]].tolist() for w, i in zip(whole, index)
            ]
    assert sum(piece.count for partition in range(3) for piece in keys.partition_slices("bands", partition)) == 10 * 16
    last = keys.partition_slices("bands", 2)[-1]
    with open(last.path, "r+b") as run:
        run.truncate(run.seek(0, 2) - 8)  # a run cut short: an error, not a wait
    with pytest.raises(EOFError, match="ends before record"):
        last.read_into(np.empty(last.count, RECORDS["bands"]))


def graph(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Undirected edges of document codes (k, 2) of one shape of cluster, past int64 on odd kinds."""
    codes = np.unique(rng.integers(2**63, 2**64 - 1, size=300, dtype=np.uint64, endpoint=True))
    if kind == "empty":
        return np.empty((0, 2), dtype=np.uint64)
    if kind == "chains":  # paths in random order
        chains = [rng.choice(len(codes), size=rng.integers(2, 12), replace=False) for _ in range(30)]
        return codes[np.array([(a, b) for chain in chains for a, b in zip(chain[:-1], chain[1:])])]
    if kind == "stars":  # one document copied many times, its copies also linked to each other
        centre, leaves = codes[0], codes[1:120]
        return np.concatenate(
            [np.stack((leaves, np.full(len(leaves), centre)), axis=1), np.stack((leaves[:-1], leaves[1:]), axis=1)]
        )
    if kind == "long path":  # in increasing order: the slowest case for propagating the minimum
        small = np.arange(10, 250, dtype=np.uint64) << np.uint64(40)  # codes of units 10..249, row 0
        return np.stack((small[:-1], small[1:]), axis=1)
    return codes[rng.integers(0, len(codes), size=(250, 2))]  # random: loops, repeats, a giant cluster


@pytest.mark.parametrize("kind", ["empty", "chains", "stars", "long path", "random"])
def test_components_on_disk_equal_a_union_find_and_the_in_memory_merge(kind, tmp_path):
    from data_pipeline.dedup.components import merged_forest
    from data_pipeline.dedup.disk_components import DiskComponents

    edges = graph(kind, np.random.default_rng(len(kind)))
    rows = 16  # edge records held at once: forces many partitions, chunks per partition and steps
    stale = tmp_path / "scratch" / "step-0000" / "00000.bin"  # left by a crashed attempt: never read
    stale.parent.mkdir(parents=True)
    stale.write_bytes(np.array([[1, 0]] * 3, dtype=np.uint64).tobytes())
    components = DiskComponents(tmp_path / "scratch", rows, edges=len(edges))
    for start in range(0, len(edges), 7):
        components.add(edges[start : start + 7])
    components.solve()
    found = np.concatenate([np.empty((0, 2), dtype=np.uint64), *components.removals()])
    found = found[np.argsort(found[:, 0])]
    expected = brute_force_survivors([tuple(edge) for edge in edges.tolist() if edge[0] != edge[1]])
    assert dict(found.tolist()) == expected and len(found) == len(expected)
    assert found.tolist() == merged_forest([edges]).tolist()
    if kind == "long path":  # the minimum crossed many partitions over several rounds
        assert components.partitions > 20 and components.steps > 6
