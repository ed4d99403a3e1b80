"""Fixed-length token windows cut from a directory of packed token shards.

Windows are packed: documents run into each other (each ends with its EOS), and a window is
simply the next ``window`` tokens of a shard. Windows never straddle two shards, so a shard's
last partial window is dropped (at most ``window - 1`` tokens per shard). A document that
tokenize cut at a shard's end goes on at the start of the next shard: its first window
starts mid-document, and document masking (which goes by EOS tokens) sees it as the
continuation it is, never joined to the document before it.

A split of thousands of shards opens lazily: the sizes come from the split index (one small
file, data_pipeline/formats/token_shards.py), and a shard is memory-mapped on first use.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from data_pipeline.formats.token_shards import ShardError, SplitIndex, TokenShard, shard_sizes


class LazyTokenShard:
    """A shard whose size is known up front; its files are opened (and checked against the
    tokenizer) when its tokens are first read."""

    def __init__(self, prefix: Path, num_tokens: int, tokenizer_hash: str | None) -> None:
        self.prefix = prefix
        self.num_tokens = num_tokens
        self.tokenizer_hash = tokenizer_hash
        self._shard: TokenShard | None = None

    @property
    def tokens(self) -> np.ndarray:
        if self._shard is None:
            self._shard = TokenShard(self.prefix, self.tokenizer_hash)
            if self._shard.num_tokens != self.num_tokens:
                raise ShardError(
                    f"{self.prefix}.json: {self._shard.num_tokens} tokens, but the split index lists {self.num_tokens}; "
                    "the shard was replaced after tokenization, re-tokenize"
                )
        return self._shard.tokens


class PackedWindows:
    def __init__(self, shards: list, window: int) -> None:  # each with num_tokens and tokens
        if window < 2:
            raise ValueError(f"window must hold at least 2 tokens, got {window}")
        self.shards = shards
        self.window = window
        counts = np.array([shard.num_tokens // window for shard in shards], dtype=np.int64)
        self._starts = np.concatenate(([0], np.cumsum(counts)))

    @classmethod
    def open(cls, directory: str | Path, split: str, window: int, tokenizer_hash: str | None = None) -> "PackedWindows":
        index = SplitIndex.load(directory, split)
        if index is not None and tokenizer_hash and index.tokenizer_hash != tokenizer_hash:
            raise ShardError(
                f"{directory}: tokenized with tokenizer {index.tokenizer_hash[:12]}, but training uses tokenizer "
                f"{tokenizer_hash[:12]}; re-tokenize with the same tokenizer"
            )
        sizes = shard_sizes(directory, split)
        if not sizes:
            raise ShardError(f"{directory}: no complete '{split}-*' token shards; run data_pipeline.tokenize first")
        return cls([LazyTokenShard(prefix, num_tokens, tokenizer_hash) for prefix, num_tokens in sizes], window)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range [0, {len(self)})")
        shard_index = int(np.searchsorted(self._starts, index, side="right")) - 1
        offset = (index - int(self._starts[shard_index])) * self.window
        return self.shards[shard_index].tokens[offset : offset + self.window]

    def gather(self, indices: np.ndarray) -> np.ndarray:
        """(len(indices), window) int64 array of the given windows."""
        out = np.empty((len(indices), self.window), dtype=np.int64)
        for row, index in enumerate(indices):
            out[row] = self[int(index)]
        return out
