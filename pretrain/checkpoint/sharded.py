"""Training state that every rank writes for itself and any layout reads back.

A checkpoint's ``shards/`` holds one safetensors file per rank with the pieces of state that
rank owns (see ``master_state``): for each parameter, a range of its flattened
tensor-parallel slice of the fp32 master weight and of each optimizer moment, stored as
``<kind>/<whole-model parameter name>``. ``index.json`` lists every piece: file, parameter
name, kinds, the tensor-parallel split it is a slice of, offset and length. The files are
written piece by piece through a fixed buffer, so a save needs no copy of the rank's state
(a save in the background copies it first, see ``pretrain.checkpoint.background_save``).

Loading (same layout, another one, consolidation for export) assembles each parameter the
reader needs from its pieces, one parameter at a time: a rank reads only the parameters it
holds, and only the saved tensor-parallel slice that matches its own when the split is the
same.
"""

from __future__ import annotations

import contextlib
import json
import math
import struct
from collections import defaultdict
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pretrain.checkpoint.background_save import HostBuffers
from pretrain.checkpoint.master_state import WEIGHT, MasterState, state_keys
from pretrain.model.init import fill_partition, full_shape, partition_range, shard_of
from pretrain.parallel.pipeline import canonical_parameters

DIRECTORY = "shards"
INDEX = "index.json"
# Host memory a save uses beyond the state itself: device tensors go to disk in chunks of
# this many bytes (host tensors are written straight from their memory).
WRITE_BUFFER_BYTES = 64 * 2**20


def shard_file(rank: int) -> str:
    return f"rank-{rank:05d}.safetensors"


def _split_of(param: nn.Parameter) -> Optional[dict[str, int]]:
    dim = getattr(param, "tp_split_dim", None)
    if dim is None:
        return None
    return {"dim": dim, "rank": param.tp_rank, "size": param.tp_size}  # type: ignore[attr-defined]


def _write_streamed(path: Path, tensors: list[tuple[str, Tensor]]) -> None:
    """A safetensors file written tensor by tensor (fp32, 1-D): the header first, from the
    shapes alone, then the data, so nothing is gathered into one buffer."""
    header: dict[str, Any] = {}
    offset = 0
    for key, tensor in tensors:
        size = tensor.numel() * 4
        header[key] = {"dtype": "F32", "shape": [tensor.numel()], "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(encoded)))
        out.write(encoded)
        for _, tensor in tensors:
            _write_tensor(out, tensor)


def _write_tensor(out: BinaryIO, tensor: Tensor) -> None:
    flat = tensor.detach().reshape(-1)
    assert flat.dtype == torch.float32
    step = WRITE_BUFFER_BYTES // 4
    for chunk in flat.split(step):
        out.write(memoryview(chunk.cpu().contiguous().numpy()).cast("B"))


def shard_contents(
    state: MasterState, named_parameters: dict[str, nn.Parameter], rank: int, stage: int, tp_rank: int
) -> tuple[list[dict[str, Any]], list[tuple[str, Tensor]]]:
    """This rank's index entries and the tensors of its shard file (views of the live state).
    Parameters that every tensor-parallel rank holds whole (norms, row-parallel biases) are
    written by rank 0."""
    pieces: list[dict[str, Any]] = []
    tensors: list[tuple[str, Tensor]] = []
    for name, param in named_parameters.items():
        fragment = state.owned(param)
        if fragment is None or (tp_rank != 0 and _split_of(param) is None):
            continue
        pieces.append(
            {
                "file": shard_file(rank),
                "stage": stage,
                "name": name,
                "shape": list(full_shape(param)),
                "split": _split_of(param),
                "start": fragment.start,
                "numel": fragment.numel,
            }
        )
        tensors += [(f"{kind}/{name}", value) for kind, value in fragment.values.items()]
    return pieces, tensors


def write_shard(path: Path, rank: int, tensors: list[tuple[str, Tensor]]) -> None:
    _write_streamed(path / DIRECTORY / shard_file(rank), tensors)


def write_index(path: Path, pieces: list[dict[str, Any]], kinds: Iterable[str]) -> None:
    index = {"format": 1, "kinds": [WEIGHT, *kinds], "pieces": pieces}
    (path / DIRECTORY / INDEX).write_text(json.dumps(index, indent=1) + "\n")


def gather_pieces(pieces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Collective: every rank's index entries (small: a few numbers per parameter)."""
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, pieces)
    return [piece for rank_pieces in gathered for piece in rank_pieces]


class ShardedState:
    """Read access to a checkpoint's ``shards/``; use as a context manager (it keeps the
    files it opened open)."""

    def __init__(self, checkpoint: Path) -> None:
        directory = checkpoint / DIRECTORY
        if not (directory / INDEX).is_file():
            raise FileNotFoundError(
                f"{directory / INDEX}: no sharded training state in this checkpoint; "
                "resume or export from a complete checkpoint of a training run (checkpoints/step-N)"
            )
        self.directory = directory
        index = json.loads((directory / INDEX).read_text())
        self.kinds: list[str] = index["kinds"]
        self.pieces: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for piece in index["pieces"]:
            self.pieces[piece["name"]].append(piece)
        self._files = contextlib.ExitStack()
        self._open: dict[str, _ShardReader] = {}

    def __enter__(self) -> ShardedState:
        return self

    def __exit__(self, *exc: object) -> None:
        self._files.close()

    def names(self) -> list[str]:
        return list(self.pieces)

    def _file(self, name: str) -> _ShardReader:
        if name not in self._open:
            self._open[name] = _ShardReader(self._files.enter_context(open(self.directory / name, "rb")))
        return self._open[name]

    def _slice(self, name: str, kind: str, split: Optional[dict[str, int]], pieces: list[dict[str, Any]]) -> Tensor:
        """One saved tensor-parallel slice (or the whole tensor), put together from its pieces."""
        shape = list(pieces[0]["shape"])
        if split is not None:
            shape[split["dim"]] //= split["size"]
        flat = torch.empty(math.prod(shape), dtype=torch.float32)
        covered = 0
        for piece in pieces:
            flat[piece["start"] : piece["start"] + piece["numel"]] = self._file(piece["file"]).get_tensor(
                f"{kind}/{name}"
            )
            covered += piece["numel"]
        if covered != flat.numel():
            raise ValueError(
                f"{self.directory}: the pieces of {kind}/{name} cover {covered} of {flat.numel()} values; "
                "incomplete checkpoint"
            )
        return flat.view(shape)

    def full(self, name: str, kind: str) -> Tensor:
        """The whole tensor of parameter ``name`` (``kind``: ``param`` or a state key)."""
        pieces = self._pieces(name, kind)
        split = pieces[0]["split"]
        if split is None:
            return self._slice(name, kind, None, pieces)
        parts = [
            self._slice(name, kind, split, [p for p in pieces if p["split"]["rank"] == r]) for r in range(split["size"])
        ]
        return torch.cat(parts, dim=split["dim"])

    def local(self, name: str, kind: str, param: nn.Parameter) -> Tensor:
        """The slice of ``name`` that ``param`` holds; reads only the matching saved slice
        when the tensor-parallel split is the same as when saved."""
        pieces = self._pieces(name, kind)
        saved, wanted = pieces[0]["split"], _split_of(param)
        if (
            saved is not None
            and wanted is not None
            and (saved["dim"], saved["size"]) == (wanted["dim"], wanted["size"])
        ):
            return self._slice(name, kind, saved, [p for p in pieces if p["split"]["rank"] == wanted["rank"]])
        return shard_of(self.full(name, kind), param)

    def _pieces(self, name: str, kind: str) -> list[dict[str, Any]]:
        if name not in self.pieces:
            raise KeyError(f"{self.directory}: no {name} saved; was the checkpoint written with another model config?")
        if kind not in self.kinds:
            raise KeyError(
                f"{self.directory}: no optimizer state {kind!r} saved (it holds {self.kinds}); it was written with "
                "another optimizer (optim.name); resume with the same one"
            )
        # A tied weight is held (and saved) by two pipeline stages, each partitioned its
        # own way: read one stage's copy.
        first_stage = min(piece["stage"] for piece in self.pieces[name])
        return [piece for piece in self.pieces[name] if piece["stage"] == first_stage]

    def tensors(self, kind: str = WEIGHT) -> Iterator[tuple[str, Tensor]]:
        """(name, whole tensor) for every saved parameter, one at a time."""
        for name in self.pieces:
            yield name, self.full(name, kind)


class _ShardReader:
    """Tensors of one shard file, read on demand into fresh memory. Not memory-mapped: the
    pages of a mapping count towards the process's resident memory until it is closed, so
    a load would look (and, under a memory limit, be) as large as the files it read."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        (length,) = struct.unpack("<Q", stream.read(8))
        self.header = json.loads(stream.read(length))
        self.data_start = 8 + length

    def get_tensor(self, key: str) -> Tensor:
        entry = self.header[key]
        if entry["dtype"] != "F32":
            raise ValueError(f"{self.stream.name}: {key} is {entry['dtype']}, not the F32 this format writes")
        start, end = entry["data_offsets"]
        self.stream.seek(self.data_start + start)
        values = torch.empty((end - start) // 4, dtype=torch.float32)
        self.stream.readinto(memoryview(values.numpy()).cast("B"))
        return values.view(entry["shape"])


def trained_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters a checkpoint holds: every one, or with LoRA the adapters alone (the
    frozen base is read again from where it came from, see ``pretrain.model.lora``)."""
    return {name: param for name, param in canonical_parameters(module).items() if param.requires_grad}


def load_shards(path: Path, state: MasterState, named_parameters: dict[str, nn.Parameter], step: int) -> None:
    """Give every local parameter its master weight and optimizer state from the checkpoint,
    one parameter at a time. ``step`` is the optimizer step the checkpoint was taken at."""
    state.prepare(step)
    with ShardedState(path) as saved:
        for name, param in named_parameters.items():
            device = param.ds_tensor.device if hasattr(param, "ds_tensor") else param.device
            values = {kind: saved.local(name, kind, param).to(device) for kind in (WEIGHT, *state.keys)}
            state.load(param, values)


@torch.no_grad()
def load_weights(path: Path, named_parameters: dict[str, nn.Parameter]) -> int:
    """The weights alone, no optimizer state, into freshly built parameters (``train
    init_from=RUN``): each its tensor-parallel slice, under ZeRO-3 its partition of it.
    Returns the number of values this rank took."""
    taken = 0
    with ShardedState(path) as saved:
        for name, param in named_parameters.items():
            value = saved.local(name, WEIGHT, param).reshape(-1)
            if hasattr(param, "ds_tensor"):
                start, stop = partition_range(param)
                value = value[start:stop]
                fill_partition(param, value.to(param.ds_tensor.dtype))  # type: ignore[attr-defined]
            else:
                param.view(-1).copy_(value)
            taken += value.numel()
    return taken


def prepare_training_state(
    path: Path, engine: Any, optimizer: torch.optim.Optimizer, grid: Any, host_buffers: Optional[HostBuffers] = None
) -> Callable[[], None]:
    """Collective: every rank's index entries are gathered and rank 0 writes the index; return
    the write of this rank's shard file. That write reads the live state, or with
    ``host_buffers`` a host copy taken now (one shard of host memory), so that training can
    go on meanwhile."""
    state = MasterState(engine, optimizer, grid.get_data_parallel_rank())
    rank = dist.get_rank()
    named = trained_parameters(engine.module)
    pieces, tensors = shard_contents(state, named, rank, grid.get_stage_id(), grid.get_slice_parallel_rank())
    copied: Optional[Callable[[], None]] = None
    if host_buffers is not None:
        tensors, copied = host_buffers.copy(tensors)
    (path / DIRECTORY).mkdir(parents=True, exist_ok=True)
    everything = gather_pieces(pieces)
    if rank == 0:
        write_index(path, everything, state.keys)

    def write() -> None:
        if copied is not None:
            copied()  # in the writer thread: the main thread goes on training
        write_shard(path, rank, tensors)

    return write


def load_training_state(path: Path, engine: Any, optimizer: torch.optim.Optimizer, grid: Any, step: int) -> None:
    """Every rank takes its part of the saved state, whatever layout wrote it."""
    state = MasterState(engine, optimizer, grid.get_data_parallel_rank())
    load_shards(path, state, trained_parameters(engine.module), step)


def bytes_per_parameter(optimizer: torch.optim.Optimizer) -> int:
    """Disk a checkpoint takes per model parameter: the fp32 master weight and each fp32
    moment (the index, headers and RNG states add a few kilobytes)."""
    return 4 * (1 + len(state_keys(optimizer)))
