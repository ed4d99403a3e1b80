"""Each rank's slices of a Hugging Face safetensors checkpoint, read lazily.

A rank holds some of the model's parameters (its pipeline stage) and of each a slice (its
tensor-parallel shard), named as in the whole ``GPT`` (``blocks.3.attn.wq.weight``, see
``pretrain.parallel.pipeline.canonical_parameters``). safetensors' ``get_slice`` reads just
those bytes from the (memory-mapped) files, so no rank ever holds the whole model.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from pretrain.hf.names import hf_name
from pretrain.model.config import ModelConfig
from pretrain.model.gpt import GPT
from pretrain.model.init import full_shape, local_shape, partition_range

INDEX_FILENAME = "model.safetensors.index.json"
SINGLE_FILENAME = "model.safetensors"
# Buffers older checkpoints saved next to the weights; recomputed by every model.
IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)
# The vocabulary's tensors: a run on a grown tokenizer gives them more rows than stored.
GROWABLE = ("embed.tokens.weight", "head.proj.weight")


@dataclass
class ReadStats:
    """What this rank read: for tests and the log."""

    tensors: int = 0
    elements: int = 0


def weight_files(directory: Path) -> dict[str, Path]:
    """Tensor name → the file holding it, from the sharded index or the single file."""
    index = directory / INDEX_FILENAME
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: directory / file for name, file in weight_map.items()}
    single = directory / SINGLE_FILENAME
    if not single.is_file():
        raise FileNotFoundError(f"init_from={directory}: neither {INDEX_FILENAME} nor {SINGLE_FILENAME} is there")
    with safe_open(str(single), framework="pt") as stored:
        return {name: single for name in stored.keys()}


def check_names(cfg: ModelConfig, stored: set[str], directory: Path) -> None:
    """Every weight of the model is in the checkpoint, and nothing else is (a tied model's
    checkpoint may also hold the head it shares with the embedding)."""
    with torch.device("meta"):
        expected = {hf_name(name) for name, _ in GPT(cfg).named_parameters()}
    missing = sorted(expected - stored)
    if missing:
        raise KeyError(
            f"init_from={directory}: tensor {missing[0]} is missing ({len(missing)} in all); "
            "config.json and the weights disagree"
        )
    spare = {name for name in stored - expected if not name.endswith(IGNORED_SUFFIXES)}
    if cfg.tie_embeddings:
        spare.discard("lm_head.weight")
    if spare:
        raise KeyError(
            f"init_from={directory}: tensor {sorted(spare)[0]} has no place in the model ({len(spare)} in all)"
        )


def _local_index(param: nn.Parameter) -> list[slice]:
    """Where this rank's tensor-parallel slice lies in the whole stored tensor."""
    local = local_shape(param)
    index = [slice(0, size) for size in local]
    dim = getattr(param, "tp_split_dim", None)
    if dim is not None:
        start = param.tp_rank * local[dim]  # type: ignore[attr-defined]
        index[dim] = slice(start, start + local[dim])
    return index


def _stored_values(param: nn.Parameter, stored_rows: int) -> int:
    """How many values at the start of this rank's flat tensor-parallel slice the checkpoint
    holds: all of them, except in an embedding (or head) grown past the checkpoint's rows,
    whose new rows are initialized, never read."""
    local = local_shape(param)
    first_row = _local_index(param)[0].start
    return max(0, min(local[0], stored_rows - first_row)) * local[1:].numel()


def _read_local(stored: Any, param: nn.Parameter, stored_rows: int) -> torch.Tensor:
    """This rank's values of one stored tensor, flat: the part of its tensor-parallel slice
    (under ZeRO-3 only of its partition) the checkpoint holds, read as the few rows that
    cover it."""
    index = _local_index(param)
    start, stop = partition_range(param) if hasattr(param, "ds_tensor") else (0, local_shape(param).numel())
    stop = min(stop, _stored_values(param, stored_rows))
    if start >= stop:
        return torch.empty(0)
    row = local_shape(param)[1:].numel()
    first, last = start // row, (stop - 1) // row + 1
    index[0] = slice(index[0].start + first, index[0].start + last)
    return stored[tuple(index)].reshape(-1)[start - first * row : stop - first * row]


@torch.no_grad()
def load_hf_weights(directory: Path, cfg: ModelConfig, params: dict[str, nn.Parameter]) -> ReadStats:
    """Copy this rank's part of every checkpoint tensor into ``params`` (canonical names)."""
    files = weight_files(directory)
    check_names(cfg, set(files), directory)
    stats = ReadStats()
    with ExitStack() as stack:
        handles = {path: stack.enter_context(safe_open(str(path), framework="pt")) for path in set(files.values())}
        for name, param in params.items():
            stored_name = hf_name(name)
            path = files[stored_name]
            stored = handles[path].get_slice(stored_name)
            shape, expected = list(stored.get_shape()), list(full_shape(param))
            if name in GROWABLE and expected[0] > cfg.padded_vocab_size:  # see with_grown_vocabulary
                expected[0] = cfg.padded_vocab_size
            if shape != expected:
                raise ValueError(
                    f"{path}: tensor {stored_name} has shape {shape}, but config.json gives the model {expected}"
                )
            value = _read_local(stored, param, shape[0])
            storage = param.ds_tensor if hasattr(param, "ds_tensor") else param.view(-1)  # type: ignore[attr-defined]
            storage[: value.numel()].copy_(value.to(storage.dtype))
            stats.tensors += 1
            stats.elements += value.numel()
    return stats
