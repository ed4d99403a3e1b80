"""Megatron-LM / GPT-NeoX indexed datasets (a ``<prefix>.bin`` + ``<prefix>.idx`` pair) as
a training data source, so an already-tokenized corpus trains without re-tokenizing.

The ``.idx`` layout (little-endian), as Megatron-LM's ``indexed_dataset.py`` publishes it:
the 9-byte magic ``MMIDIDX\\x00\\x00``, a uint64 version (1), a uint8 dtype code, a uint64
sequence count S, a uint64 document-index count D, then int32 sequence lengths (S), int64
byte pointers into the ``.bin`` (S), int64 document indices (D) and, in multimodal
datasets only, int8 sequence modes (S), which text training does not need.

The ``.bin`` holds the sequences back to back, so the whole file is one token stream in
document order: exactly what our packed windows cut. Megatron's preprocessing appends an
end-of-document token only with ``--append-eod``; without it documents run into each
other, as they also do in Megatron's own GPT dataset, and we read them the same way.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from data_pipeline.formats.token_shards import ShardError

MAGIC = b"MMIDIDX\x00\x00"
_HEADER = struct.Struct("<QBQQ")  # version, dtype code, sequence count, document-index count
# Megatron's dtype codes; floating-point codes are not token ids, so they are refused.
TOKEN_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 8: np.uint16}


def is_megatron_prefix(path: str | Path) -> bool:
    """Whether ``path`` names a Megatron pair: ``<path>.idx`` starting with the magic."""
    index = Path(f"{path}.idx")
    if not index.is_file():
        return False
    with open(index, "rb") as stream:
        return stream.read(len(MAGIC)) == MAGIC


class MegatronTokens:
    """One Megatron pair, memory-mapped; ``tokens`` is its whole token stream (the same
    ``num_tokens``/``tokens`` a token shard offers, so packed windows read either)."""

    def __init__(self, prefix: str | Path) -> None:
        self.prefix = Path(prefix)
        index_path = Path(f"{prefix}.idx")
        lengths, pointers, dtype = self._read_index(index_path)
        self.num_tokens = int(lengths.sum(dtype=np.int64))
        self.num_sequences = len(lengths)
        # Pointers must run back to back: then the .bin is one stream, read without a gather.
        expected = np.concatenate(([0], np.cumsum(lengths.astype(np.int64) * dtype.itemsize)[:-1]))
        if len(lengths) and not np.array_equal(pointers, expected):
            raise ShardError(f"{index_path}: sequences are not stored back to back in the .bin; rewrite it with Megatron's builder")
        data_path = Path(f"{prefix}.bin")
        needed = self.num_tokens * dtype.itemsize
        size = data_path.stat().st_size if data_path.is_file() else -1
        if size < needed:
            raise ShardError(
                f"{data_path}: {'missing' if size < 0 else f'{size} bytes'}, but {index_path} indexes {needed} bytes; "
                "the pair is incomplete, copy or rebuild the .bin"
            )
        self.tokens = np.memmap(data_path, dtype=dtype, mode="r", shape=(self.num_tokens,)) if self.num_tokens else np.empty(0, dtype)

    @staticmethod
    def _read_index(path: Path) -> tuple[np.ndarray, np.ndarray, np.dtype]:
        with open(path, "rb") as stream:
            head = stream.read(len(MAGIC) + _HEADER.size)
        if len(head) < len(MAGIC) + _HEADER.size or not head.startswith(MAGIC):
            raise ShardError(f"{path}: not a Megatron MMIDIDX index (bad or short header); give the prefix of a .bin/.idx pair")
        version, code, sequences, _ = _HEADER.unpack_from(head, len(MAGIC))
        if version != 1:
            raise ShardError(f"{path}: MMIDIDX version {version} is not supported (expected 1)")
        if code not in TOKEN_DTYPES:
            raise ShardError(f"{path}: dtype code {code} is not an integer token type; re-run Megatron's preprocess_data")
        start = len(MAGIC) + _HEADER.size
        try:
            lengths = np.memmap(path, dtype="<i4", mode="r", offset=start, shape=(sequences,)) if sequences else np.empty(0, "<i4")
            pointers = np.memmap(path, dtype="<i8", mode="r", offset=start + 4 * sequences, shape=(sequences,)) if sequences else np.empty(0, "<i8")
        except ValueError:
            raise ShardError(f"{path}: shorter than its {sequences} sequences need; the index is cut off, rebuild it") from None
        return lengths, pointers, np.dtype(TOKEN_DTYPES[code]).newbyteorder("<")
