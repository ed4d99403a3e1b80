"""The training sample SentencePiece learns its vocabulary from.

The sample is the ``size`` texts whose seeded hash of the document id is smallest, among the
documents of a subset of the input's work units (data_pipeline/io/units.py). The subset is
chosen by a seeded hash of each unit's name, in that order until the units' bytes reach
``units_factor × size × max_bytes``: no text is longer than ``max_bytes``, so the subset holds
at least ``units_factor`` times the texts the sample needs (more when the files are
compressed), while a large corpus is read only in part. ``units_factor=None`` reads every
unit. Each unit is read on its own (on ``workers`` processes) and returns its own smallest
``size`` texts, so memory is bounded by the sample per worker (and the merged sample in this
process); merging them gives the smallest of all.

That choice depends only on the input, the seed and the settings, not on the number of
workers, the process, the folder or a random generator, and the sample is fed to
SentencePiece sorted by that hash, so the same input and seed train the same vocabulary
anywhere. Documents are fed whole (newlines included, so pieces such as ".\\n\\n" can be
learned); one longer than SentencePiece's ``max_sentence_length`` would be skipped by it, so
it is cut into pieces at line ends instead.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Iterator, Optional

import xxhash

from data_pipeline.document import Document
from data_pipeline.executors.pool import run_unordered
from data_pipeline.io.config import HuggingFaceConfig, ReaderConfig
from data_pipeline.io.readers import BadInput, BadInputTally, read_unit, resolve_corpus_inputs
from data_pipeline.io.units import InputUnit, split_into_units, unit_bytes

log = logging.getLogger(__name__)

# A UTF-8 character takes at most 4 bytes: a cut every max_bytes // 4 characters always fits.
MAX_UTF8_CHAR_BYTES = 4
# Uncompressed JSON lines are cut into units of this size (compressed files are read whole),
# so that a subset of a few large files can still be drawn.
UNIT_SIZE_MB = 256
# (-key, -piece number, text): heapq's min-heap on negated keys keeps the smallest keys.
Entry = tuple[int, int, str]


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
    """The document's place in the sample order: a seeded hash of its id (the reader names a
    record without one by its file and line)."""
    return xxhash.xxh64_intdigest(document.id.encode("utf-8", "surrogatepass"), seed=seed)


def input_units(spec: str, hf: HuggingFaceConfig | None = None) -> list[InputUnit]:
    """The work units of ``input`` (a curated corpus: a folder's top-level shards; an ``hf:``
    dataset with its configuration, split and files: ``hf``)."""
    return split_into_units(resolve_corpus_inputs(spec), UNIT_SIZE_MB, hf or HuggingFaceConfig())


def choose_units(units: list[InputUnit], min_bytes: Optional[float], seed: int) -> list[InputUnit]:
    """Units in the order of a seeded hash of their names until their bytes reach
    ``min_bytes`` (all of them for None), returned in input order."""
    if min_bytes is None:
        return units
    order = sorted(
        units, key=lambda unit: xxhash.xxh64_intdigest(f"{unit.input_name}\0{unit.start}".encode(), seed=seed)
    )
    chosen, total = [], 0
    for unit in order:
        if total >= min_bytes:
            break
        chosen.append(unit)
        total += unit_bytes(unit)
    return sorted(chosen, key=lambda unit: unit.index)


def keep_smallest(heap: list[Entry], entry: Entry, size: int) -> None:
    """Push ``entry`` onto the bounded heap of the ``size`` smallest keys. Ties (equal ids)
    are broken by the text itself, so what is kept never depends on reading order."""
    if len(heap) < size:
        heapq.heappush(heap, entry)
    elif entry > heap[0]:
        heapq.heapreplace(heap, entry)


@dataclass(frozen=True)
class SampleSettings:
    size: int
    max_bytes: int
    seed: int
    strict: bool
    # The records' text and id fields and the hf: dataset's configuration, as curation reads them.
    reader: ReaderConfig = field(default_factory=ReaderConfig)


def unit_sample(unit: InputUnit, settings: SampleSettings) -> dict[str, Any]:
    """One unit's ``size`` smallest-key texts (a heap) with what it read and its bad records."""
    heap: list[Entry] = []
    bad_input = BadInputTally(settings.strict)
    documents = texts = num_bytes = 0
    for item in read_unit(unit, settings.reader):
        if isinstance(item, BadInput):
            bad_input.add(item)
            continue
        text_bytes = len(item.text.encode("utf-8"))
        documents += 1
        if not text_bytes:  # nothing to learn from; it would take a place in the sample
            continue
        num_bytes += text_bytes
        key = sample_key(item, settings.seed)
        for piece, text in enumerate(cut_text(item.text, text_bytes, settings.max_bytes)):
            texts += 1
            keep_smallest(heap, (-key, -piece, text), settings.size)
    return {
        "heap": heap,
        "documents": documents,
        "texts": texts,
        "num_bytes": num_bytes,
        "bad_input": bad_input.stats(),
    }


@dataclass
class TrainingSample:
    """The training texts with the smallest sample keys, in key order; counts what it read.
    Iterating reads the chosen units, then yields the sample."""

    units: list[InputUnit]
    settings: SampleSettings
    workers: int
    # Units' bytes read at least, as a multiple of size × max_bytes; None: every unit.
    units_factor: Optional[float]
    units_read: int = field(default=0, init=False)
    documents: int = field(default=0, init=False)
    texts: int = field(default=0, init=False)
    num_bytes: int = field(default=0, init=False)
    bad_input: BadInputTally = field(default_factory=lambda: BadInputTally(strict=False), init=False)
    # SentencePiece turns an error raised inside the stream into a RuntimeError carrying only
    # its message; the original is kept here so that it can be raised as itself.
    error: Exception | None = field(default=None, init=False)

    def __iter__(self) -> Iterator[str]:
        try:
            kept = self._smallest_keys()
            if not kept:  # SentencePiece would fail with an internal assertion
                raise ValueError(
                    f"no text to train on: the {self.units_read} input units read hold {self.documents} documents, "
                    "none with text; point input= to curated shards whose records have a non-empty 'text'"
                )
        except Exception as err:
            self.error = err
            raise
        # Largest key first, so that popping from the end hands the texts over in key order and
        # frees each one as SentencePiece copies it.
        kept.sort()
        while kept:
            yield kept.pop()[2]

    def _smallest_keys(self) -> list[Entry]:
        settings = self.settings
        min_bytes = None if self.units_factor is None else self.units_factor * settings.size * settings.max_bytes
        chosen = choose_units(self.units, min_bytes, settings.seed)
        log.info("reading %d of %d input units for the sample", len(chosen), len(self.units))
        heap: list[Entry] = []
        for _, result in run_unordered(partial(unit_sample, settings=settings), chosen, self.workers):
            for entry in result["heap"]:
                keep_smallest(heap, entry, settings.size)
            self.units_read += 1
            self.documents += result["documents"]
            self.texts += result["texts"]
            self.num_bytes += result["num_bytes"]
            self.bad_input.absorb(result["bad_input"])
        if len(heap) < settings.size and len(chosen) < len(self.units):
            # The byte budget counts file bytes (JSON syntax and escapes included), not text.
            log.warning(
                "the sample has %d of input_sentence_size=%d texts from %d of %d input units; raise "
                "sample_units_factor (or set it to null) to read more of the input",
                len(heap),
                settings.size,
                len(chosen),
                len(self.units),
            )
        return heap
