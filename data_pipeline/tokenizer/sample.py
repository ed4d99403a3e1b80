"""The training sample SentencePiece learns its vocabulary from.

Every document of every shard is streamed once; the sample keeps the ``size`` texts whose
seeded hash of the document id (of the text when there is none) is smallest. That choice
depends only on the documents and the seed, not on the order of shards, the process, the
folder or a random generator, and it is fed to SentencePiece sorted by that hash, so the
same input and seed train the same vocabulary anywhere. Memory is bounded by the sample,
not the corpus. Documents are fed whole (newlines included, so pieces such as ".\\n\\n"
can be learned); one longer than SentencePiece's ``max_sentence_length`` would be skipped by
it, so it is cut into pieces at line ends instead.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import xxhash

from data_pipeline.documents import BadRecordLog, Document, read_documents

# A UTF-8 character takes at most 4 bytes: a cut every max_bytes // 4 characters always fits.
MAX_UTF8_CHAR_BYTES = 4


def cut_text(text: str, num_bytes: int, max_bytes: int) -> Iterator[str]:
    """``text`` in pieces of at most ``max_bytes`` UTF-8 bytes, cut after newlines where possible."""
    if num_bytes <= max_bytes:
        yield text
        return
    piece: list[str] = []
    piece_bytes = 0
    lines = text.split("\n")
    for number, line in enumerate(lines):
        if number < len(lines) - 1:
            line += "\n"
        line_bytes = len(line.encode("utf-8"))
        if piece and piece_bytes + line_bytes > max_bytes:
            yield "".join(piece)
            piece, piece_bytes = [], 0
        if line_bytes > max_bytes:
            step = max_bytes // MAX_UTF8_CHAR_BYTES
            yield from (line[start : start + step] for start in range(0, len(line), step))
            continue
        piece.append(line)
        piece_bytes += line_bytes
    if piece:
        yield "".join(piece)


def sample_key(document: Document, seed: int) -> int:
    """The document's place in the sample order: a seeded hash of its id (or of its text)."""
    key = document.id if document.id is not None else document.text
    return xxhash.xxh64_intdigest(key.encode("utf-8", "surrogatepass"), seed=seed)


@dataclass
class TrainingSample:
    """The ``size`` training texts of all shards with the smallest sample keys, in key order;
    counts what it read. Iterating streams the shards once, then yields the sample."""

    sources: list[Path]
    max_bytes: int
    size: int
    seed: int
    bad_records: BadRecordLog
    documents: int = field(default=0, init=False)
    texts: int = field(default=0, init=False)
    num_bytes: int = field(default=0, init=False)
    # SentencePiece turns an error raised inside the stream into a RuntimeError carrying only
    # its message; the original is kept here so that it can be raised as itself.
    error: Exception | None = field(default=None, init=False)

    def __iter__(self) -> Iterator[str]:
        try:
            kept = self._smallest_keys()
        except Exception as err:
            self.error = err
            raise
        # Largest key first, so that popping from the end hands the texts over in key order and
        # frees each one as SentencePiece copies it. Ties (equal ids) are broken by the text
        # itself, so the order never depends on reading order.
        kept.sort()
        while kept:
            yield kept.pop()[2]

    def _smallest_keys(self) -> list[tuple[int, int, str]]:
        """A bounded max-heap (keys negated) of (key, piece number, text) over all texts."""
        heap: list[tuple[int, int, str]] = []
        for path in self.sources:
            for document in read_documents(path, self.bad_records):
                self.documents += 1
                self.num_bytes += document.num_bytes
                key = sample_key(document, self.seed)
                for piece, text in enumerate(cut_text(document.text, document.num_bytes, self.max_bytes)):
                    self.texts += 1
                    entry = (-key, -piece, text)
                    if len(heap) < self.size:
                        heapq.heappush(heap, entry)
                    elif entry > heap[0]:
                        heapq.heapreplace(heap, entry)
        return heap
