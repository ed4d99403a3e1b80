"""JSON-lines writers: zstd-compressed shards that roll over at a size, and that appear under
their final name only once complete (a crash leaves a ``.tmp`` file, never a short shard)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import zstandard

from data_pipeline.io.config import OutputConfig
from data_pipeline.io.lines import iter_lines


def readable_mode() -> int:
    """The mode a plain ``open()`` would give (mkstemp's 0600 would hide outputs from the
    group on a shared file system)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write then rename: readers (and resume) never see a half-written file. The temporary
    name is unique, so tasks writing the same file at once (threads, or processes on other
    nodes that share the file system) do not take each other's."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
    os.fchmod(handle, readable_mode())
    with os.fdopen(handle, "wb") as stream:
        stream.write(data)
    os.replace(temporary, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


class ShardWriter:
    """Writes JSON objects to ``<prefix>-0000.jsonl.zst``, ``<prefix>-0001.jsonl.zst``, ...
    starting a new shard when the current one holds ``max_bytes`` of uncompressed JSON.
    No file at all is created if nothing is written."""

    def __init__(self, prefix: Path, max_bytes: float = float("inf"), compression_level: int = 3) -> None:
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.compressor = zstandard.ZstdCompressor(level=compression_level)
        self.paths: list[Path] = []
        self._file: BinaryIO | None = None
        self._stream: Any = None
        self._bytes_in_shard = 0

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        if self._stream is None or self._bytes_in_shard >= self.max_bytes:
            self._open_next_shard()
        self._stream.write(line)
        self._bytes_in_shard += len(line)

    def _open_next_shard(self) -> None:
        self._finish_shard()
        path = self.prefix.with_name(f"{self.prefix.name}-{len(self.paths):04d}.jsonl.zst")
        self.paths.append(path)
        self._file = open(self._temporary(path), "wb")
        self._stream = self.compressor.stream_writer(self._file, closefd=False)
        self._bytes_in_shard = 0

    def _finish_shard(self) -> None:
        if self._stream is None:
            return
        self._stream.close()
        self._file.close()
        os.replace(self._temporary(self.paths[-1]), self.paths[-1])
        self._stream = self._file = None

    @staticmethod
    def _temporary(path: Path) -> Path:
        return path.with_name(path.name + ".tmp")

    def close(self) -> list[Path]:
        """Finish the last shard; the paths of all shards written."""
        self._finish_shard()
        return self.paths

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, *_: Any) -> None:
        if exc_type is None:
            self.close()
        elif self._stream is not None:  # an error: leave no shard that looks complete
            self._stream.close()
            self._file.close()
            os.remove(self._temporary(self.paths[-1]))


def output_writer(prefix: Path, config: OutputConfig) -> ShardWriter:
    """A writer of clean output shards as configured."""
    return ShardWriter(prefix, config.shard_size_mb * 1e6, config.compression_level)


def iter_shard(path: Path) -> Iterator[dict[str, Any]]:
    """The records of one of our shards, in order."""
    for line in iter_lines(str(path)):
        yield json.loads(line)
