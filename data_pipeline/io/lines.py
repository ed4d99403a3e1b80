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
    return _lines_of_chunks(_chunks(path))


def _lines_of_chunks(chunks: Iterator[bytes]) -> Iterator[bytes]:
    pending: list[bytes] = []  # pieces of an unfinished line: joined once, even for a huge line
    for chunk in chunks:
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


def iter_line_range(path: str, start: int, stop: int) -> tuple[int, Iterator[bytes]]:
    """The lines of an uncompressed file that start in bytes [start, stop), and how many
    lines come before them (to number them as in the whole file)."""
    with open(path, "rb") as stream:
        first = start
        if start > 0:  # the line that holds byte start-1 belongs to the previous range
            stream.seek(start - 1)
            first = start - 1 + len(stream.readline())
        lines_before = _count_newlines(stream, first)
    return lines_before, _lines_of_chunks(_range_chunks(path, first, stop))


def _count_newlines(stream, stop: int) -> int:
    stream.seek(0)
    count, position = 0, 0
    while position < stop:
        chunk = stream.read(min(_CHUNK_BYTES, stop - position))
        if not chunk:
            break
        count += chunk.count(b"\n")
        position += len(chunk)
    return count


def _range_chunks(path: str, first: int, stop: int) -> Iterator[bytes]:
    """Bytes from `first` through the end of the line that holds byte stop-1."""
    with open(path, "rb") as stream:
        stream.seek(first)
        position, chunk = first, b"\n"
        while position < stop:
            chunk = stream.read(min(_CHUNK_BYTES, stop - position))
            if not chunk:
                return
            position += len(chunk)
            yield chunk
        if not chunk.endswith(b"\n"):
            yield stream.readline()  # the rest of the last line, which started in range
