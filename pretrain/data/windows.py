"""Fixed-length token windows cut from a directory of packed token shards.

Windows are packed: documents run into each other (each ends with its EOS), and a window is
simply the next ``window`` tokens of a shard. Windows never straddle two shards, so a shard's
last partial window is dropped (at most ``window - 1`` tokens per shard). A document that
tokenize cut at a shard's end goes on at the start of the next shard: its first window
starts mid-document, and document masking (which goes by EOS tokens) sees it as the
continuation it is, never joined to the document before it.

Chat shards (``tokenize format=chat``) hold whole samples of ``window`` tokens with a loss
mask; opened with ``loss_mask=True`` a window is then (2, window): the tokens and their mask
bytes (objective=sft reads both).

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
    def mask(self) -> np.ndarray | None:
        """The loss-mask bytes of a chat shard (None for plain token shards)."""
        return self._open().mask

    @property
    def tokens(self) -> np.ndarray:
        return self._open().tokens

    def _open(self) -> TokenShard:
        if self._shard is None:
            self._shard = TokenShard(self.prefix, self.tokenizer_hash)
            if self._shard.num_tokens != self.num_tokens:
                raise ShardError(
                    f"{self.prefix}.json: {self._shard.num_tokens} tokens, "
                    f"but the split index lists {self.num_tokens}; "
                    "the shard was replaced after tokenization, re-tokenize"
                )
        return self._shard


class PackedWindows:
    def __init__(
        self, shards: list, window: int, loss_mask: bool = False
    ) -> None:  # each with num_tokens and tokens (and mask)
        if window < 2:
            raise ValueError(f"window must hold at least 2 tokens, got {window}")
        self.shards = shards
        self.window = window
        self.loss_mask = loss_mask
        counts = np.array([shard.num_tokens // window for shard in shards], dtype=np.int64)
        self._starts = np.concatenate(([0], np.cumsum(counts)))

    @classmethod
    def open(
        cls, directory: str | Path, split: str, window: int, tokenizer_hash: str | None = None, loss_mask: bool = False
    ) -> PackedWindows:
        index = SplitIndex.load(directory, split)
        if index is not None and tokenizer_hash and index.tokenizer_hash != tokenizer_hash:
            raise ShardError(
                f"{directory}: tokenized with tokenizer {index.tokenizer_hash[:12]}, but training uses tokenizer "
                f"{tokenizer_hash[:12]}; re-tokenize with the same tokenizer"
            )
        check_chat_samples(directory, index, window, loss_mask)
        sizes = shard_sizes(directory, split)
        if not sizes:
            raise ShardError(f"{directory}: no complete '{split}-*' token shards; run data_pipeline.tokenize first")
        return cls(
            [LazyTokenShard(prefix, num_tokens, tokenizer_hash) for prefix, num_tokens in sizes], window, loss_mask
        )

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range [0, {len(self)})")
        shard_index = int(np.searchsorted(self._starts, index, side="right")) - 1
        offset = (index - int(self._starts[shard_index])) * self.window
        shard = self.shards[shard_index]
        tokens = shard.tokens[offset : offset + self.window]
        return np.stack((tokens, shard.mask[offset : offset + self.window])) if self.loss_mask else tokens

    def gather(self, indices: np.ndarray) -> np.ndarray:
        """(len(indices), window) int64 array of the given windows ((…, 2, window) with loss masks)."""
        return np.stack([self[int(index)] for index in indices]).astype(np.int64)


def check_chat_samples(directory: str | Path, index: SplitIndex | None, window: int, loss_mask: bool) -> None:
    """Chat shards are for objective=sft (and it for them), with samples of exactly ``window`` tokens."""
    sample_tokens = None if index is None else index.sample_tokens
    if loss_mask and sample_tokens is None:
        raise ShardError(
            f"data.path={directory}: plain token shards have no loss mask; objective=sft trains on the output of "
            "`data_pipeline.tokenize format=chat` (docs/sft.md)"
        )
    if not loss_mask and sample_tokens is not None:
        raise ShardError(
            f"data.path={directory}: chat shards (tokenize format=chat) hold padded conversations; train them "
            "with objective=sft"
        )
    if loss_mask and sample_tokens != window:
        raise ShardError(
            f"data.path={directory}: chat samples of {sample_tokens} tokens (tokenized with chat.seq_len="
            f"{sample_tokens - 1}), but train.seq_len={window - 1}; set train.seq_len={sample_tokens - 1} or "
            f"re-tokenize with chat.seq_len={window - 1}"
        )
