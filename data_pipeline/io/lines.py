"""Lines of (possibly compressed) files, read as bytes: plain, gzip and zstd.

A compressed file that is cut short or corrupt raises one of STREAM_ERRORS once the lines
before the damage have been yielded."""
from __future__ import annotations

import gzip
import zlib
from typing import Iterator

import zstandard

_CHUNK_BYTES = 1 << 20


class TruncatedStreamError(EOFError):
    pass


STREAM_ERRORS = (OSError, EOFError, zlib.error, zstandard.ZstdError)


def iter_lines(path: str) -> Iterator[bytes]:
    """Lines split on b"\\n" only: str.splitlines would also split inside a text on U+2028."""
    pending: list[bytes] = []  # pieces of an unfinished line: joined once, even for a huge line
    for chunk in _chunks(path):
        if b"\n" not in chunk:
            pending.append(chunk)
            continue
        pieces = chunk.split(b"\n")
        pieces[0] = b"".join(pending + [pieces[0]])
        pending = [pieces.pop()]
        yield from pieces
    if any(pending):
        yield b"".join(pending)


def _chunks(path: str) -> Iterator[bytes]:
    if path.endswith(".zst"):
        yield from _zstd_chunks(path)
        return
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as stream:
        while chunk := stream.read1(_CHUNK_BYTES):  # read1: what is there, so a cut file still yields its head
            yield chunk


def _zstd_chunks(path: str) -> Iterator[bytes]:
    """Decompressed bytes of a (possibly multi-frame) zstd file. A file cut short raises:
    zstandard's stream reader would end quietly at the cut and lose the rest unnoticed."""
    decompressor = zstandard.ZstdDecompressor()
    with open(path, "rb") as stream:
        frame = decompressor.decompressobj()
        in_frame = False
        while compressed := stream.read(_CHUNK_BYTES):
            while compressed:
                in_frame = True
                yield frame.decompress(compressed)
                compressed = b""
                if frame.eof:
                    compressed = frame.unused_data
                    frame = decompressor.decompressobj()
                    in_frame = False
        if in_frame:
            raise TruncatedStreamError("the zstd stream ends inside a frame (truncated file)")
