"""Token shards, packed windows, the global sample order and blending."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import data_pipeline.formats.token_shards as token_shards
import pretrain.data.windows as windows_module
from data_pipeline.formats.token_shards import (
    ShardError,
    SplitIndex,
    TokenShard,
    TokenShardWriter,
    find_shards,
    shard_prefix,
    token_dtype,
)
from pretrain.data.loader import BatchPlan, TrainingStream
from pretrain.data.order import BlendedOrder, ShuffledOrder
from pretrain.data.windows import PackedWindows


def write_shard(
    directory: Path, documents: list[list[int]], vocab: int = 1000, tokenizer_hash: str = "abc", index: int = 0
) -> Path:
    prefix = shard_prefix(directory, "train", index)
    with TokenShardWriter(prefix, vocab, tokenizer_hash) as writer:
        writer.add_documents(documents)
    return prefix


def test_shard_round_trip_and_manifest(tmp_path: Path) -> None:
    documents = [[5, 6, 2], [7, 2], [], [8, 9, 10, 2]]
    prefix = write_shard(tmp_path, documents)
    shard = TokenShard(prefix, expected_tokenizer_hash="abc")
    assert shard.num_documents == 4 and shard.num_tokens == 9
    assert [shard.document(i).tolist() for i in range(4)] == documents
    assert shard.tokens.dtype == np.uint16 and isinstance(shard.tokens, np.memmap)
    assert token_dtype(70000) == np.uint32


def test_large_vocabularies_use_uint32(tmp_path: Path) -> None:
    prefix = write_shard(tmp_path, [[69999, 1]], vocab=70000)
    assert TokenShard(prefix).document(0).tolist() == [69999, 1]


def test_writer_rejects_out_of_range_ids(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="out of range"):
        write_shard(tmp_path, [[1, 1000]])
    assert find_shards(tmp_path, "train") == []  # nothing published after a failure


def test_unfinished_shard_is_not_listed(tmp_path: Path) -> None:
    write_shard(tmp_path, [[1, 2]], index=0)
    writer = TokenShardWriter(shard_prefix(tmp_path, "train", 1), 1000, "abc")
    writer.add_document([3, 4])  # never closed: as if the process died here
    assert find_shards(tmp_path, "train") == [shard_prefix(tmp_path, "train", 0)]


def test_mismatched_idx_is_refused(tmp_path: Path) -> None:
    first = write_shard(tmp_path, [[1, 2, 3], [4]], index=0)
    second = write_shard(tmp_path, [[1], [2], [3], [4]], index=1)
    first.with_suffix(".idx").write_bytes(second.with_suffix(".idx").read_bytes())
    with pytest.raises(ShardError, match=r"\.idx"):
        TokenShard(first)


def test_truncated_bin_is_refused(tmp_path: Path) -> None:
    prefix = write_shard(tmp_path, [[1, 2, 3], [4]])
    data = prefix.with_suffix(".bin").read_bytes()
    prefix.with_suffix(".bin").write_bytes(data[:-2])
    with pytest.raises(ShardError, match="truncated"):
        TokenShard(prefix)


def test_other_tokenizer_is_refused(tmp_path: Path) -> None:
    prefix = write_shard(tmp_path, [[1, 2]], tokenizer_hash="aaaa")
    with pytest.raises(ShardError, match="tokenizer"):
        TokenShard(prefix, expected_tokenizer_hash="bbbb")


def test_windows_pack_documents_and_stay_inside_shards(tmp_path: Path) -> None:
    write_shard(tmp_path, [list(range(1, 11)), list(range(11, 18))], index=0)  # 17 tokens
    write_shard(tmp_path, [list(range(100, 109))], index=1)  # 9 tokens
    windows = PackedWindows.open(tmp_path, "train", window=4)
    assert len(windows) == 4 + 2
    assert windows[2].tolist() == [9, 10, 11, 12]  # across a document boundary
    assert windows[4].tolist() == [100, 101, 102, 103]  # the next shard starts fresh
    with pytest.raises(ShardError, match="no complete"):
        PackedWindows.open(tmp_path, "val", window=4)


def test_packed_documents_keep_their_ends(tmp_path: Path) -> None:
    """add_packed: documents copied as a block (tokenize's shard packing) index like added ones."""
    with TokenShardWriter(shard_prefix(tmp_path, "train", 0), 1000, "abc") as writer:
        writer.add_document([1, 2])
        writer.add_packed(np.array([3, 4, 5, 6, 7], dtype=np.uint16), np.array([1, 5]))
    shard = TokenShard(shard_prefix(tmp_path, "train", 0))
    assert [shard.document(i).tolist() for i in range(shard.num_documents)] == [[1, 2], [3], [4, 5, 6, 7]]
    with (
        pytest.raises(ValueError, match="do not cover"),
        TokenShardWriter(shard_prefix(tmp_path, "train", 1), 1000, "abc") as writer,
    ):
        writer.add_packed(np.array([3, 4, 5]), np.array([1, 2]))


def test_thousands_of_shards_open_lazily(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Start-up reads the split index alone; a shard is opened when its tokens are first read."""
    count = 1500
    sizes = [3 + index % 5 for index in range(count)]
    for index, size in enumerate(sizes):
        write_shard(tmp_path, [list(range(index % 900, index % 900 + size))], index=index)
    SplitIndex(
        "train",
        "abc",
        8,
        [{"name": f"train-{i:05d}", "num_tokens": n, "num_documents": 1} for i, n in enumerate(sizes)],
    ).save(tmp_path)
    opened: list[Path] = []
    manifests_read = Counter()

    class CountedShard(TokenShard):
        def __init__(self, prefix, expected_tokenizer_hash=None) -> None:
            opened.append(Path(prefix))
            super().__init__(prefix, expected_tokenizer_hash)

    load = token_shards.ShardManifest.load
    monkeypatch.setattr(windows_module, "TokenShard", CountedShard)
    monkeypatch.setattr(
        token_shards.ShardManifest, "load", classmethod(lambda cls, path: manifests_read.update([path]) or load(path))
    )
    windows = PackedWindows.open(tmp_path, "train", window=2, tokenizer_hash="abc")
    assert len(windows) == sum(size // 2 for size in sizes)
    assert opened == [] and not manifests_read
    last = windows[len(windows) - 1]
    first_token, end = (count - 1) % 900, 2 * (sizes[-1] // 2)  # the last shard's last whole window
    assert opened == [shard_prefix(tmp_path, "train", count - 1)] and last.tolist() == [
        first_token + end - 2,
        first_token + end - 1,
    ]
    windows[len(windows) - 2]  # the same shard: opened once
    assert len(opened) == 1


def test_order_depends_only_on_seed_and_epoch() -> None:
    a, b, c = ShuffledOrder(100, seed=1), ShuffledOrder(100, seed=1), ShuffledOrder(100, seed=2)
    first_epoch = [a[i] for i in range(100)]
    assert sorted(first_epoch) == list(range(100))
    assert first_epoch == [b[i] for i in range(100)]
    assert first_epoch != [c[i] for i in range(100)]
    assert [a[i] for i in range(100, 200)] != first_epoch  # a new permutation each epoch
    assert a[150] == ShuffledOrder(100, seed=1)[150]  # random access, no history needed


@pytest.mark.parametrize("dp_size", [1, 2, 4])
def test_global_batch_is_the_same_for_any_number_of_ranks(dp_size: int) -> None:
    global_batch = 8
    micro = 2 if dp_size < 4 else 1
    plan = BatchPlan(micro, global_batch // (micro * dp_size), dp_size)
    assert plan.global_batch == global_batch
    for step in range(3):
        seen = np.concatenate(
            [plan.positions(step * global_batch, m, r) for r in range(dp_size) for m in range(plan.grad_accum)]
        )
        assert sorted(seen.tolist()) == list(range(step * global_batch, (step + 1) * global_batch))


def test_blending_honours_weights_and_is_deterministic() -> None:
    order = BlendedOrder([0.7, 0.2, 0.1], seed=3, block=1000)
    draws = [order[p] for p in range(5000)]
    counts = Counter(source for source, _ in draws)
    assert abs(counts[0] / 5000 - 0.7) < 0.001 and abs(counts[1] / 5000 - 0.2) < 0.001
    for source in range(3):  # each source's own positions run 0, 1, 2, ... without gaps
        own = [position for s, position in draws if s == source]
        assert own == list(range(len(own)))
    assert draws == [BlendedOrder([0.7, 0.2, 0.1], seed=3, block=1000)[p] for p in range(5000)]
    assert draws != [BlendedOrder([0.7, 0.2, 0.1], seed=4, block=1000)[p] for p in range(5000)]


def test_training_stream_blends_sources(tmp_path: Path) -> None:
    sources = []
    for name, offset in (("a", 100), ("b", 500)):
        directory = tmp_path / name
        write_shard(directory, [list(range(offset, offset + 400))])
        sources.append(PackedWindows.open(directory, "train", window=4))
    stream = TrainingStream(sources, weights=[3.0, 1.0], seed=0)
    batch = stream.sample(np.arange(400))
    assert abs((batch.sources == 0).mean() - 0.75) < 0.02
    assert np.all(batch.windows[batch.sources == 1] >= 500)
    # The same positions always give the same windows.
    again = TrainingStream(sources, weights=[3.0, 1.0], seed=0).sample(np.arange(400))
    assert np.array_equal(batch.windows, again.windows)
