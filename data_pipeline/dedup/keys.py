"""Per-unit dedup keys on disk, written in batches so that a unit's memory does not grow with it.

A document is a uint64 code, ``unit << 40 | row``: codes sort in the global document order
(input unit, then row), which makes "the earliest document survives" a minimum. Each unit's
folder holds, row by row, its ids (UTF-8 blob + offsets), exact hashes (16 bytes) and MinHash
signatures (read by row by the buckets stage), and sorted runs of records for the buckets
stage, each ordered by (partition, key, document) with an index of where each partition starts:
band records (band, key, doc) partitioned by band key, exact records (hash, doc) by hash."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from data_pipeline.dedup.config import DedupConfig
from data_pipeline.dedup.exact import exact_hash
from data_pipeline.dedup.minhash import MinHasher
from data_pipeline.io.units import unit_key

ROW_BITS = 40  # 1 T rows per unit, 16 M units
BAND_RECORD = np.dtype([("band", "<u8"), ("key", "<u8"), ("doc", "<u8")])
EXACT_RECORD = np.dtype([("high", "<u8"), ("low", "<u8"), ("doc", "<u8")])
RUN_RECORDS = 1 << 20  # records buffered before a sorted run is written (24 MB)
RECORDS = {"bands": BAND_RECORD, "exact": EXACT_RECORD}  # the sorted runs' kinds
_EXACT_BYTES = 16


def doc_codes(unit: int, rows: np.ndarray) -> np.ndarray:
    return (np.uint64(unit) << np.uint64(ROW_BITS)) | rows.astype(np.uint64)


def unit_of(codes: np.ndarray) -> np.ndarray:
    return (codes >> np.uint64(ROW_BITS)).astype(np.int64)


def row_of(codes: np.ndarray) -> np.ndarray:
    return (codes & np.uint64((1 << ROW_BITS) - 1)).astype(np.int64)


class RunWriter:
    """Buffers records and writes them as sorted runs ``<kind>-NNNN.npy`` + ``.index.npy``."""

    def __init__(
        self, folder: Path, kind: str, partitions: int, partition_field: str, sort_fields: tuple[str, ...]
    ) -> None:
        self.folder, self.kind, self.partitions = folder, kind, partitions
        self.partition_field, self.sort_fields = partition_field, sort_fields
        self.buffered: list[np.ndarray] = []
        self.count = 0
        self.runs = 0

    def add(self, records: np.ndarray) -> None:
        self.buffered.append(records)
        self.count += len(records)
        if self.count >= RUN_RECORDS:
            self.flush()

    def flush(self) -> None:
        if not self.count:
            return
        records = np.concatenate(self.buffered)
        partition = records[self.partition_field] % np.uint64(self.partitions)
        order = np.lexsort([records[name] for name in reversed(self.sort_fields)] + [partition])
        records, partition = records[order], partition[order]
        index = np.searchsorted(partition, np.arange(self.partitions + 1, dtype=np.uint64))
        np.save(self.folder / f"{self.kind}-{self.runs:04d}.npy", records)
        np.save(self.folder / f"{self.kind}-{self.runs:04d}.index.npy", index)
        self.buffered, self.count = [], 0
        self.runs += 1


class UnitKeyWriter:
    """Dedup keys of one unit's documents, added in order; ``finish`` publishes the folder."""

    def __init__(self, folder: Path, unit: int, config: DedupConfig, partitions: int) -> None:
        self.folder, self.unit, self.config = folder, unit, config
        self.staging = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(self.staging, ignore_errors=True)  # a crashed attempt's leftovers
        self.staging.mkdir(parents=True)
        self.hasher = MinHasher(config.minhash) if config.near else None
        self.files = {
            name: open(self.staging / name, "wb") for name in ("ids.bin", "ids.offsets", "exact.bin", "minhash.bin")
        }
        self.files["ids.offsets"].write(np.zeros(1, np.uint64).tobytes())
        self.bands = RunWriter(self.staging, "bands", partitions, "key", ("band", "key", "doc"))
        self.exact_runs = RunWriter(self.staging, "exact", partitions, "high", ("high", "low", "doc"))
        self.rows = 0
        self.id_bytes = 0
        self.pending_texts: list[str] = []
        self.pending_exact: list[bytes] = []
        self.pending_offsets: list[int] = []

    def add(self, doc_id: str, text: str) -> None:
        encoded_id = doc_id.encode("utf-8", "surrogatepass")
        self.files["ids.bin"].write(encoded_id)
        self.id_bytes += len(encoded_id)
        self.pending_offsets.append(self.id_bytes)
        # always computed, even with exact dedup off: it tells exact copies from near ones in the report
        self.pending_exact.append(exact_hash(text))
        if self.hasher is not None:
            self.pending_texts.append(text)
        if len(self.pending_exact) >= self.config.batch_size:
            self._flush_batch()

    def _flush_batch(self) -> None:
        count = len(self.pending_exact)
        if not count:
            return
        codes = doc_codes(self.unit, np.arange(self.rows, self.rows + count))
        self.files["ids.offsets"].write(np.array(self.pending_offsets, dtype=np.uint64).tobytes())
        exact = b"".join(self.pending_exact)
        self.files["exact.bin"].write(exact)
        if self.config.exact:
            words = np.frombuffer(exact, dtype=np.uint64).reshape(count, 2)
            records = np.empty(count, EXACT_RECORD)
            records["high"], records["low"], records["doc"] = words[:, 0], words[:, 1], codes
            self.exact_runs.add(records)
        if self.hasher is not None:
            signatures = self.hasher.signatures(self.pending_texts)
            self.files["minhash.bin"].write(signatures.tobytes())
            keys = self.hasher.bands_of(signatures)  # (count, bands)
            records = np.empty(keys.size, BAND_RECORD)
            records["band"] = np.tile(np.arange(keys.shape[1], dtype=np.uint64), count)
            records["key"], records["doc"] = keys.ravel(), np.repeat(codes, keys.shape[1])
            self.bands.add(records)
        self.rows += count
        self.pending_texts, self.pending_exact, self.pending_offsets = [], [], []

    def finish(self) -> int:
        """Write what is buffered and publish the folder; the number of documents."""
        self._flush_batch()
        self.bands.flush()
        self.exact_runs.flush()
        for file in self.files.values():
            file.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.staging.rename(self.folder)
        return self.rows

    def abandon(self) -> None:
        for file in self.files.values():
            file.close()
        shutil.rmtree(self.staging, ignore_errors=True)


def _read_rows(path: Path, rows: np.ndarray, row_bytes: int) -> bytes:
    """Rows of a raw file by positioned reads. Not a memory map: a fault maps the pages around
    it too, so random rows would make most of every unit's file resident in this process."""
    with open(path, "rb", buffering=0) as file:
        descriptor = file.fileno()
        return b"".join(os.pread(descriptor, row_bytes, row * row_bytes) for row in rows.tolist())


def npy_header(file: BinaryIO) -> tuple[tuple[int, ...], np.dtype]:
    """Reads a .npy file's header: its shape and dtype; the file is left where the data begins."""
    version = np.lib.format.read_magic(file)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(file)
    return shape, dtype


class UnitKeys:
    """One unit's keys on disk, read by row."""

    def __init__(self, folder: Path, permutations: int) -> None:
        self.folder = folder
        self.permutations = permutations

    def minhashes(self, rows: np.ndarray) -> np.ndarray:
        data = _read_rows(self.folder / "minhash.bin", rows, self.permutations * 8)
        return np.frombuffer(data, dtype=np.uint64).reshape(len(rows), self.permutations)

    def exact(self, rows: np.ndarray) -> np.ndarray:
        return np.frombuffer(_read_rows(self.folder / "exact.bin", rows, _EXACT_BYTES), dtype=np.uint8).reshape(
            len(rows), _EXACT_BYTES
        )

    def ids(self, rows: np.ndarray) -> list[str]:
        offsets = np.frombuffer(
            _read_rows(self.folder / "ids.offsets", np.stack((rows, rows + 1), axis=1).ravel(), 8), dtype=np.uint64
        )
        with open(self.folder / "ids.bin", "rb") as blob:
            found = []
            for start, stop in offsets.reshape(-1, 2).tolist():
                blob.seek(start)
                found.append(blob.read(stop - start).decode("utf-8", "surrogatepass"))
            return found

    def partition_slices(self, kind: str, partition: int) -> list[RunSlice]:
        """Where one partition's records lie in every sorted run of `kind` (a contiguous slice of each)."""
        slices = []
        for path in sorted(self.folder.glob(f"{kind}-[0-9][0-9][0-9][0-9].npy")):
            index = np.load(path.with_name(path.name[: -len(".npy")] + ".index.npy"))
            slices.append(RunSlice(path, int(index[partition]), int(index[partition + 1] - index[partition])))
        return slices


@dataclass(frozen=True)
class RunSlice:
    """Records [start, start + count) of a sorted run. Read by positioned reads into the caller's
    array, not memory-mapped: the kernel maps whole large folios around every fault (read-ahead
    is megabytes), so each mapped run added megabytes to the reader's RSS whatever the slice's
    size, and a buckets unit reads one run of every input unit."""

    path: Path
    start: int
    count: int

    def read_into(self, out: np.ndarray) -> None:
        with open(self.path, "rb", buffering=0) as file:
            npy_header(file)  # to where the records begin
            target = memoryview(out.view(np.uint8))
            offset, filled = file.tell() + self.start * out.itemsize, 0
            while filled < len(target):
                read = os.preadv(file.fileno(), [target[filled:]], offset + filled)
                if not read:
                    raise EOFError(f"{self.path}: ends before record {self.start + self.count}")
                filled += read


class KeyStore:
    """Every unit's keys under one folder, opened on first use; lookups by document code."""

    def __init__(self, root: Path, permutations: int) -> None:
        self.root, self.permutations = root, permutations
        self._units: dict[int, UnitKeys] = {}

    def unit(self, unit: int) -> UnitKeys:
        if unit not in self._units:
            self._units[unit] = UnitKeys(self.root / unit_key(unit), self.permutations)
        return self._units[unit]

    def _gather(self, codes: np.ndarray, column: str) -> np.ndarray:
        units, rows = unit_of(codes), row_of(codes)
        width = self.permutations if column == "minhashes" else _EXACT_BYTES
        result = np.empty((len(codes), width), dtype=np.uint64 if column == "minhashes" else np.uint8)
        for unit in np.unique(units).tolist():
            here = units == unit
            result[here] = getattr(self.unit(unit), column)(rows[here])
        return result

    def signatures(self, codes: np.ndarray) -> np.ndarray:
        return self._gather(codes, "minhashes")

    def exact(self, codes: np.ndarray) -> np.ndarray:
        return self._gather(codes, "exact")

    def ids(self, codes: np.ndarray) -> list[str]:
        units, rows = unit_of(codes), row_of(codes)
        found: list[str] = [""] * len(codes)
        for unit in np.unique(units).tolist():
            positions = np.flatnonzero(units == unit)
            for position, doc_id in zip(positions.tolist(), self.unit(unit).ids(rows[positions])):
                found[position] = doc_id
        return found
