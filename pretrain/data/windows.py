"""Fixed-length token windows cut from a directory of packed token shards.

Windows are packed: documents run into each other (each ends with its EOS), and a window is
simply the next ``window`` tokens of a shard. Windows never straddle two shards, so a shard's
last partial window is dropped (at most ``window - 1`` tokens per shard).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from data_pipeline.formats.token_shards import ShardError, TokenShard, find_shards


class PackedWindows:
    def __init__(self, shards: list[TokenShard], window: int) -> None:
        if window < 2:
            raise ValueError(f"window must hold at least 2 tokens, got {window}")
        self.shards = shards
        self.window = window
        counts = np.array([shard.num_tokens // window for shard in shards], dtype=np.int64)
        self._starts = np.concatenate(([0], np.cumsum(counts)))

    @classmethod
    def open(cls, directory: str | Path, split: str, window: int, tokenizer_hash: str | None = None) -> "PackedWindows":
        prefixes = find_shards(directory, split)
        if not prefixes:
            raise ShardError(f"{directory}: no complete '{split}-*' token shards; run data_pipeline.tokenize first")
        return cls([TokenShard(prefix, tokenizer_hash) for prefix in prefixes], window)

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
