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
other, as they also do in Megatron's own GPT dataset: we read them the same way and say so
in a start-up warning (checked on the first documents).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from data_pipeline.formats.token_shards import ShardError
from pretrain.data.windows import PackedWindows

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
        lengths, pointers, documents, dtype = self._read_index(index_path)
        self.num_tokens = int(lengths.sum(dtype=np.int64))
        self.num_sequences = len(lengths)
        if not _back_to_back(lengths, pointers, dtype.itemsize):
            raise ShardError(
                f"{index_path}: sequences are not stored back to back in the .bin; rewrite it with Megatron's builder"
            )
        self._lengths, self._pointers, self._documents = lengths, pointers, documents
        data_path = Path(f"{prefix}.bin")
        needed = self.num_tokens * dtype.itemsize
        size = data_path.stat().st_size if data_path.is_file() else -1
        if size < needed:
            raise ShardError(
                f"{data_path}: {'missing' if size < 0 else f'{size} bytes'}, but {index_path} indexes {needed} bytes; "
                "the pair is incomplete, copy or rebuild the .bin"
            )
        self.tokens = (
            np.memmap(data_path, dtype=dtype, mode="r", shape=(self.num_tokens,))
            if self.num_tokens
            else np.empty(0, dtype)
        )

    def documents_without_eos(self, eos_id: int, first: int = 1000) -> int:
        """How many of the first ``first`` documents do not end with ``eos_id`` (a sample:
        preprocessing either appends EOD to every document or to none)."""
        ends = self._documents[1 : first + 1].astype(np.int64)  # one past each document's last sequence
        ends = ends[ends > 0]
        last = (self._pointers[ends - 1] // self.tokens.dtype.itemsize + self._lengths[ends - 1]).astype(np.int64) - 1
        last = last[last >= 0]
        return int(np.count_nonzero(self.tokens[last] != eos_id)) if len(last) else 0

    @staticmethod
    def _read_index(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.dtype]:
        with open(path, "rb") as stream:
            head = stream.read(len(MAGIC) + _HEADER.size)
        if len(head) < len(MAGIC) + _HEADER.size or not head.startswith(MAGIC):
            raise ShardError(
                f"{path}: not a Megatron MMIDIDX index (bad or short header); give the prefix of a .bin/.idx pair"
            )
        version, code, sequences, document_entries = _HEADER.unpack_from(head, len(MAGIC))
        if version != 1:
            raise ShardError(f"{path}: MMIDIDX version {version} is not supported (expected 1)")
        if code not in TOKEN_DTYPES:
            raise ShardError(
                f"{path}: dtype code {code} is not an integer token type; re-run Megatron's preprocess_data"
            )
        start = len(MAGIC) + _HEADER.size
        try:
            lengths = _array(path, "<i4", start, sequences)
            pointers = _array(path, "<i8", start + 4 * sequences, sequences)
            documents = _array(path, "<i8", start + 12 * sequences, document_entries)
        except ValueError:
            raise ShardError(
                f"{path}: shorter than its {sequences} sequences need; the index is cut off, rebuild it"
            ) from None
        return lengths, pointers, documents, np.dtype(TOKEN_DTYPES[code]).newbyteorder("<")


def _array(path: Path, dtype: str, offset: int, count: int) -> np.ndarray:
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(count,)) if count else np.empty(0, dtype)


def _back_to_back(lengths: np.ndarray, pointers: np.ndarray, itemsize: int, chunk: int = 1 << 20) -> bool:
    """Whether each sequence starts where the one before ends, so the .bin is one stream.
    Checked a chunk at a time: memory stays flat however many sequences the index holds."""
    expected_start = 0
    for begin in range(0, len(lengths), chunk):
        sizes = lengths[begin : begin + chunk].astype(np.int64) * itemsize
        ends = expected_start + np.cumsum(sizes)
        starts = np.concatenate(([expected_start], ends[:-1]))
        if not np.array_equal(pointers[begin : begin + chunk], starts):
            return False
        expected_start = int(ends[-1])
    return True


def missing_eos_warnings(paths: list[str], sources: list[PackedWindows], eos_id: int) -> list[str]:
    """Start-up warnings for Megatron sources whose documents run into each other."""
    warnings = []
    for path, source in zip(paths, sources):
        for shard in source.shards:
            if isinstance(shard, MegatronTokens) and shard.documents_without_eos(eos_id):
                warnings.append(
                    f"warning: data.path={path}: documents do not end with EOS (id {eos_id}), so they run into each "
                    "other as in Megatron's own GPT dataset; "
                    "re-run Megatron's preprocess_data with --append-eod to separate them"
                )
    return warnings
