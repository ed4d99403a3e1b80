"""The packed token-shard format: the one place that writes and reads it.

A shard is three files sharing a prefix (``<dir>/<split>-<NNNNN>``):

- ``.bin``  every document's token ids back to back (little-endian uint16 when the
            vocabulary fits in 16 bits, else uint32); documents carry their own EOS.
- ``.idx``  little-endian uint64 document offsets into ``.bin``, ``num_documents + 1``
            entries, starting at 0 and ending at ``num_tokens``.
- ``.json`` the manifest: format, dtype, vocabulary size, token and document counts, and
            the hash of the tokenizer that produced the ids.

The manifest is written last, by rename, so a shard without one was cut off mid-write
and is never read. Reading is memory-mapped: slicing a window copies nothing.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

FORMAT_NAME = "packed-token-shard"
FORMAT_VERSION = 1
OFFSET_DTYPE = np.dtype("<u8")
_SHARD_NAME = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<index>\d{5})$")


class ShardError(ValueError):
    """A token shard that cannot be used as it is; the message names the file and the fix."""


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def shard_prefix(directory: str | Path, split: str, index: int) -> Path:
    return Path(directory) / f"{split}-{index:05d}"


@dataclass(frozen=True)
class ShardManifest:
    dtype: str
    vocab_size: int
    num_tokens: int
    num_documents: int
    tokenizer_hash: str
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION

    @classmethod
    def load(cls, path: Path) -> "ShardManifest":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ShardError(f"{path}: manifest is not valid JSON ({err}); re-run tokenization for this shard") from None
        if data.get("format") != FORMAT_NAME:
            raise ShardError(f"{path}: not a {FORMAT_NAME} manifest (format={data.get('format')!r})")
        if data.get("version") != FORMAT_VERSION:
            raise ShardError(f"{path}: format version {data.get('version')} is not supported (expected {FORMAT_VERSION})")
        try:
            return cls(**data)
        except TypeError as err:
            raise ShardError(f"{path}: malformed manifest ({err})") from None


class TokenShardWriter:
    """Streams documents into one shard; ``close()`` (or leaving the ``with``) publishes it."""

    def __init__(self, prefix: str | Path, vocab_size: int, tokenizer_hash: str) -> None:
        self.prefix = Path(prefix)
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        self.vocab_size = vocab_size
        self.tokenizer_hash = tokenizer_hash
        self.dtype = token_dtype(vocab_size)
        self._bin_tmp = self.prefix.with_suffix(".bin.tmp")
        self._bin = open(self._bin_tmp, "wb")
        self._offsets: list[int] = [0]
        self._closed = False

    @property
    def num_tokens(self) -> int:
        return self._offsets[-1]

    def add_document(self, ids: Sequence[int] | np.ndarray) -> None:
        array = np.asarray(ids)
        if array.ndim != 1:
            raise ValueError(f"a document is a 1-D sequence of ids, got shape {array.shape}")
        if array.size and (array.min() < 0 or array.max() >= self.vocab_size):
            raise ValueError(
                f"token id out of range [0, {self.vocab_size}) in document {len(self._offsets) - 1} of {self.prefix}"
            )
        self._bin.write(array.astype(self.dtype, copy=False).tobytes())
        self._offsets.append(self._offsets[-1] + int(array.size))

    def add_documents(self, documents: Iterable[Sequence[int] | np.ndarray]) -> None:
        for ids in documents:
            self.add_document(ids)

    def close(self) -> ShardManifest:
        if self._closed:
            raise RuntimeError(f"{self.prefix}: writer already closed")
        self._closed = True
        self._bin.close()
        idx_tmp = self.prefix.with_suffix(".idx.tmp")
        np.asarray(self._offsets, dtype=OFFSET_DTYPE).tofile(idx_tmp)
        manifest = ShardManifest(
            dtype=self.dtype.name,
            vocab_size=self.vocab_size,
            num_tokens=self.num_tokens,
            num_documents=len(self._offsets) - 1,
            tokenizer_hash=self.tokenizer_hash,
        )
        json_tmp = self.prefix.with_suffix(".json.tmp")
        json_tmp.write_text(json.dumps(asdict(manifest), indent=2) + "\n")
        os.replace(self._bin_tmp, self.prefix.with_suffix(".bin"))
        os.replace(idx_tmp, self.prefix.with_suffix(".idx"))
        os.replace(json_tmp, self.prefix.with_suffix(".json"))  # last: marks completion
        return manifest

    def abort(self) -> None:
        """Drop everything written so far; nothing is published."""
        if not self._closed:
            self._closed = True
            self._bin.close()
        for suffix in (".bin.tmp", ".idx.tmp", ".json.tmp"):
            self.prefix.with_suffix(suffix).unlink(missing_ok=True)

    def __enter__(self) -> "TokenShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class TokenShard:
    """A published shard, memory-mapped and checked for consistency on open."""

    def __init__(self, prefix: str | Path, expected_tokenizer_hash: str | None = None) -> None:
        self.prefix = Path(prefix)
        manifest_path = self.prefix.with_suffix(".json")
        if not manifest_path.exists():
            raise ShardError(
                f"{manifest_path}: missing manifest, so the shard was never completed; delete "
                f"{self.prefix}.* and re-run tokenization for it"
            )
        self.manifest = ShardManifest.load(manifest_path)
        if expected_tokenizer_hash and self.manifest.tokenizer_hash != expected_tokenizer_hash:
            raise ShardError(
                f"{manifest_path}: made with tokenizer {self.manifest.tokenizer_hash[:12] or '<none>'}, but training "
                f"uses tokenizer {expected_tokenizer_hash[:12]}; re-tokenize with the same tokenizer"
            )
        dtype = np.dtype(self.manifest.dtype)
        if dtype != token_dtype(self.manifest.vocab_size):
            raise ShardError(f"{manifest_path}: dtype {dtype} does not fit vocab_size {self.manifest.vocab_size}")
        self.tokens = self._memmap(self.prefix.with_suffix(".bin"), dtype, self.manifest.num_tokens)
        self.offsets = self._memmap(self.prefix.with_suffix(".idx"), OFFSET_DTYPE, self.manifest.num_documents + 1)
        if self.offsets[0] != 0 or int(self.offsets[-1]) != self.manifest.num_tokens:
            raise ShardError(
                f"{self.prefix}.idx: offsets run from {int(self.offsets[0])} to {int(self.offsets[-1])}, but the "
                f".bin holds {self.manifest.num_tokens} tokens; the .idx does not belong to this .bin, re-tokenize"
            )
        if len(self.offsets) > 1 and np.any(np.diff(self.offsets.astype(np.int64)) < 0):
            raise ShardError(f"{self.prefix}.idx: offsets decrease; the index is corrupt, re-tokenize")

    @staticmethod
    def _memmap(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
        if not path.exists():
            raise ShardError(f"{path}: missing; re-run tokenization for this shard")
        expected = count * dtype.itemsize
        actual = path.stat().st_size
        if actual != expected:
            raise ShardError(
                f"{path}: {actual} bytes, but the manifest implies {expected}; the file is truncated or "
                "from another shard, re-tokenize"
            )
        if count == 0:
            return np.zeros(0, dtype=dtype)
        return np.memmap(path, dtype=dtype, mode="r", shape=(count,))

    @property
    def num_tokens(self) -> int:
        return self.manifest.num_tokens

    @property
    def num_documents(self) -> int:
        return self.manifest.num_documents

    def document(self, index: int) -> np.ndarray:
        return self.tokens[int(self.offsets[index]) : int(self.offsets[index + 1])]


def find_shards(directory: str | Path, split: str) -> list[Path]:
    """Prefixes of the completed shards of one split, in index order."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ShardError(f"{directory}: token-shard directory not found (set data.path to the tokenize output)")
    prefixes = []
    for manifest in directory.glob(f"{split}-*.json"):
        match = _SHARD_NAME.match(manifest.stem)
        if match and match["split"] == split:
            prefixes.append(manifest.with_suffix(""))
    return sorted(prefixes)
