"""The packed token-shard format: the one place that writes and reads it.

A shard is three files sharing a prefix (``<dir>/<split>-<NNNNN>``):

- ``.bin``  every document's token ids back to back (little-endian uint16 when the
            vocabulary fits in 16 bits, else uint32); documents carry their own EOS.
- ``.idx``  little-endian uint64 document offsets into ``.bin``, ``num_documents + 1``
            entries, starting at 0 and ending at ``num_tokens``.
- ``.json`` the manifest: format, dtype, vocabulary size, token and document counts, and
            the hash of the tokenizer that produced the ids.
- ``.mask`` chat shards only (``tokenize format=chat``, manifest ``loss_mask: true``): one
            uint8 per token, bit 0 (LOSS_BIT) set where the token is a training target
            (an assistant token), bit 1 (START_BIT) where a conversation (or a padding run)
            starts, so training keeps attention inside each conversation.

The manifest is written last, by rename, so a shard without one was cut off mid-write
and is never read. Reading is memory-mapped: slicing a window copies nothing.

The shards of a split hold one token stream cut into pieces of equal size (tokenize's
``tokens_per_shard``), so a document may begin in one shard and end in the next: the ``.idx``
of each shard then counts its two pieces as documents, the first piece without its EOS. The
documents' true ends are their EOS tokens, which is what training's packing and document
masking go by. ``<dir>/<split>.shards.json`` (the split index) lists every shard's size, so
a reader learns the sizes of thousands of shards from one small file and opens a shard only
when it needs its tokens. Chat shards hold whole samples of ``sample_tokens`` tokens each
(the split index says how many), so a training window is exactly one stored sample.
"""

from __future__ import annotations

import hashlib
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
MASK_DTYPE = np.dtype("u1")
LOSS_BIT, START_BIT = 1, 2  # the bits of a .mask byte
SPLIT_INDEX_FORMAT = "token-split-index"
# Tokens copied per write by add_packed: bounds the memory a shard of any size needs.
_COPY_CHUNK = 1 << 24
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
    loss_mask: bool = False  # a .mask file goes with the .bin

    @classmethod
    def load(cls, path: Path) -> ShardManifest:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ShardError(
                f"{path}: manifest is not valid JSON ({err}); re-run tokenization for this shard"
            ) from None
        if data.get("format") != FORMAT_NAME:
            raise ShardError(f"{path}: not a {FORMAT_NAME} manifest (format={data.get('format')!r})")
        if data.get("version") != FORMAT_VERSION:
            raise ShardError(
                f"{path}: format version {data.get('version')} is not supported (expected {FORMAT_VERSION})"
            )
        try:
            return cls(**data)
        except TypeError as err:
            raise ShardError(f"{path}: malformed manifest ({err})") from None


class TokenShardWriter:
    """Streams documents into one shard; ``close()`` (or leaving the ``with``) publishes it.
    Tokens and offsets go to disk as they come: memory stays flat for a shard of any size."""

    def __init__(self, prefix: str | Path, vocab_size: int, tokenizer_hash: str, loss_mask: bool = False) -> None:
        self.prefix = Path(prefix)
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        self.vocab_size = vocab_size
        self.tokenizer_hash = tokenizer_hash
        self.dtype = token_dtype(vocab_size)
        self._bin_tmp = self.prefix.with_suffix(".bin.tmp")
        self._idx_tmp = self.prefix.with_suffix(".idx.tmp")
        self._bin = open(self._bin_tmp, "wb")
        self._idx = open(self._idx_tmp, "wb")
        self._idx.write(np.zeros(1, OFFSET_DTYPE).tobytes())
        self._mask_tmp = self.prefix.with_suffix(".mask.tmp")
        self._mask = open(self._mask_tmp, "wb") if loss_mask else None
        self.num_tokens = 0
        self.num_documents = 0
        self._closed = False

    def _check_range(self, array: np.ndarray) -> None:
        if array.size and (array.min() < 0 or array.max() >= self.vocab_size):
            raise ValueError(
                f"token id out of range [0, {self.vocab_size}) in document {self.num_documents} of {self.prefix}"
            )

    def _write_mask(self, mask: Sequence[int] | np.ndarray | None, length: int) -> None:
        if (mask is None) != (self._mask is None):
            raise ValueError(f"{self.prefix}: give a loss mask exactly when the writer was opened with loss_mask=True")
        if self._mask is not None:
            bits = np.asarray(mask, dtype=MASK_DTYPE)
            if bits.shape != (length,):
                raise ValueError(f"{self.prefix}: a mask of shape {bits.shape} for {length} tokens")
            self._mask.write(bits.tobytes())

    def add_document(self, ids: Sequence[int] | np.ndarray, mask: Sequence[int] | np.ndarray | None = None) -> None:
        array = np.asarray(ids)
        if array.ndim != 1:
            raise ValueError(f"a document is a 1-D sequence of ids, got shape {array.shape}")
        self._check_range(array)
        self._write_mask(mask, len(array))
        self._bin.write(array.astype(self.dtype, copy=False).tobytes())
        self.num_tokens += int(array.size)
        self.num_documents += 1
        self._idx.write(np.array([self.num_tokens], OFFSET_DTYPE).tobytes())

    def add_documents(self, documents: Iterable[Sequence[int] | np.ndarray]) -> None:
        for ids in documents:
            self.add_document(ids)

    def add_packed(self, tokens: np.ndarray, document_ends: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Documents already back to back (a memory-mapped range of another shard):
        ``document_ends`` are the offsets into ``tokens`` where each ends, the last one
        ``len(tokens)``; ``mask`` their loss-mask bytes (chat shards). Copied a chunk at a time."""
        ends = np.asarray(document_ends, dtype=np.int64)
        if len(tokens) and (not len(ends) or ends[-1] != len(tokens) or np.any(np.diff(ends) < 0) or ends[0] < 0):
            raise ValueError(f"{self.prefix}: document ends {ends[:3]}... do not cover {len(tokens)} tokens in order")
        for start in range(0, len(tokens), _COPY_CHUNK):
            chunk = np.asarray(tokens[start : start + _COPY_CHUNK])
            self._check_range(chunk)
            self._bin.write(chunk.astype(self.dtype, copy=False).tobytes())
            self._write_mask(None if mask is None else mask[start : start + _COPY_CHUNK], len(chunk))
        self._idx.write((ends + self.num_tokens).astype(OFFSET_DTYPE).tobytes())
        self.num_tokens += len(tokens)
        self.num_documents += len(ends)

    def close(self) -> ShardManifest:
        if self._closed:
            raise RuntimeError(f"{self.prefix}: writer already closed")
        self._closed = True
        self._close_files()
        manifest = ShardManifest(
            dtype=self.dtype.name,
            vocab_size=self.vocab_size,
            num_tokens=self.num_tokens,
            num_documents=self.num_documents,
            tokenizer_hash=self.tokenizer_hash,
            loss_mask=self._mask is not None,
        )
        json_tmp = self.prefix.with_suffix(".json.tmp")
        json_tmp.write_text(json.dumps(asdict(manifest), indent=2) + "\n")
        os.replace(self._bin_tmp, self.prefix.with_suffix(".bin"))
        os.replace(self._idx_tmp, self.prefix.with_suffix(".idx"))
        if self._mask is not None:
            os.replace(self._mask_tmp, self.prefix.with_suffix(".mask"))
        os.replace(json_tmp, self.prefix.with_suffix(".json"))  # last: marks completion
        return manifest

    def abort(self) -> None:
        """Drop everything written so far; nothing is published."""
        if not self._closed:
            self._closed = True
            self._close_files()
        for suffix in (".bin.tmp", ".idx.tmp", ".mask.tmp", ".json.tmp"):
            self.prefix.with_suffix(suffix).unlink(missing_ok=True)

    def _close_files(self) -> None:
        for stream in (self._bin, self._idx, self._mask):
            if stream is not None:
                stream.close()

    def __enter__(self) -> TokenShardWriter:
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
        # chat shards: the loss-mask bytes (LOSS_BIT, START_BIT); None for plain token shards
        self.mask = (
            self._memmap(self.prefix.with_suffix(".mask"), MASK_DTYPE, self.manifest.num_tokens)
            if self.manifest.loss_mask
            else None
        )
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


@dataclass(frozen=True)
class SplitIndex:
    """``<dir>/<split>.shards.json``: the size of every shard of a split, so that a reader
    need not open thousands of shards (or their manifests) to know them."""

    split: str
    tokenizer_hash: str
    tokens_per_shard: int
    shards: list[dict]  # {"name": "train-00000", "num_tokens": ..., "num_documents": ...} in order
    format: str = SPLIT_INDEX_FORMAT
    # chat shards: every sample is this many tokens (train.seq_len + 1), with a .mask; None: a token stream
    sample_tokens: int | None = None

    @property
    def num_tokens(self) -> int:
        return sum(shard["num_tokens"] for shard in self.shards)

    @property
    def num_documents(self) -> int:
        return sum(shard["num_documents"] for shard in self.shards)

    def save(self, directory: str | Path) -> None:
        path = split_index_path(directory, self.split)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, directory: str | Path, split: str) -> SplitIndex | None:
        """The split's index, or None when the directory has none (shards written one by one)."""
        path = split_index_path(directory, split)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            if data.get("format") != SPLIT_INDEX_FORMAT:
                raise ShardError(f"{path}: not a {SPLIT_INDEX_FORMAT} file (format={data.get('format')!r})")
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as err:
            raise ShardError(f"{path}: malformed split index ({err}); re-run tokenization to rewrite it") from None


def split_index_path(directory: str | Path, split: str) -> Path:
    return Path(directory) / f"{split}.shards.json"


def split_identity(directory: str | Path, split: str) -> dict:
    """What a split of token shards is, wherever it lies: its tokenizer and every shard's name,
    token and document count (from the split index, else the manifests), summed up in a
    digest. Resume compares it, so a moved corpus resumes and another one does not."""
    index = SplitIndex.load(directory, split)
    if index is not None:
        tokenizer_hash = index.tokenizer_hash
        shards = [[shard["name"], shard["num_tokens"], shard["num_documents"]] for shard in index.shards]
    else:
        manifests = [
            (prefix.name, ShardManifest.load(prefix.with_suffix(".json"))) for prefix in find_shards(directory, split)
        ]
        tokenizer_hash = manifests[0][1].tokenizer_hash if manifests else ""
        shards = [[name, manifest.num_tokens, manifest.num_documents] for name, manifest in manifests]
    return {
        "tokenizer_hash": tokenizer_hash,
        "shards": len(shards),
        "num_tokens": sum(shard[1] for shard in shards),
        "num_documents": sum(shard[2] for shard in shards),
        "digest": hashlib.sha256(json.dumps([tokenizer_hash, split, shards]).encode()).hexdigest()[:16],
    }


def shard_sizes(directory: str | Path, split: str) -> list[tuple[Path, int]]:
    """(prefix, num_tokens) of every completed shard of a split, in order: from the split index
    when there is one, else from each shard's manifest."""
    index = SplitIndex.load(directory, split)
    if index is not None:
        return [(Path(directory) / shard["name"], int(shard["num_tokens"])) for shard in index.shards]
    return [
        (prefix, ShardManifest.load(prefix.with_suffix(".json")).num_tokens) for prefix in find_shards(directory, split)
    ]
