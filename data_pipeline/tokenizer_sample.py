"""The stream of training texts that SentencePiece samples its training set from.

Every document of every shard is streamed once; SentencePiece keeps a uniform reservoir
sample of ``input_sentence_size`` texts, so memory is bounded by the sample, not the corpus.
Documents are fed whole (newlines included, so pieces such as ".\\n\\n" can be learned);
one longer than SentencePiece's ``max_sentence_length`` would be skipped by it, so it is
cut into pieces at line ends instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from data_pipeline.documents import BadRecordLog, read_documents

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


@dataclass
class TrainingTextStream:
    """Iterates the training texts of all shards once, counting what it read."""

    sources: list[Path]
    max_bytes: int
    bad_records: BadRecordLog
    documents: int = field(default=0, init=False)
    texts: int = field(default=0, init=False)
    num_bytes: int = field(default=0, init=False)
    # SentencePiece turns an error raised inside the stream into a RuntimeError carrying only
    # its message; the original is kept here so that it can be raised as itself.
    error: Exception | None = field(default=None, init=False)

    def __iter__(self) -> Iterator[str]:
        try:
            for path in self.sources:
                for document in read_documents(path, self.bad_records):
                    self.documents += 1
                    self.num_bytes += document.num_bytes
                    for text in cut_text(document.text, document.num_bytes, self.max_bytes):
                        self.texts += 1
                        yield text
        except Exception as err:
            self.error = err
            raise
