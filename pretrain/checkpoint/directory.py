"""Checkpoints under ``<run_dir>/checkpoints/step-NNNNNNNN/``.

Every rank writes the training state it owns (``shards/``, see
``pretrain.checkpoint.sharded``) and its RNG state (tensors only); written last by
rank 0 once every rank is done, ``complete.json``: step, consumed samples, the layout, the
resolved config and the tokenizer metadata. A directory without ``complete.json`` was cut
off mid-write and is never resumed from. With ``train.async_save`` the ranks write in
the background and meet for ``complete.json`` there (``pretrain.checkpoint.background_save``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from pretrain.checkpoint.background_save import BackgroundSaver
from pretrain.model.config import ModelConfig
from pretrain.parallel import rng

COMPLETE_MARKER = "complete.json"
_TAG = re.compile(r"^step-(\d{8})$")


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def tag_for(step: int) -> str:
    return f"step-{step:08d}"


def is_complete(path: Path) -> bool:
    return (path / COMPLETE_MARKER).is_file()


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _TAG.match(p.name) and is_complete(p)]
    return sorted(found, key=lambda p: p.name)


def latest_complete(root: Path) -> Optional[Path]:
    found = complete_checkpoints(root)
    return found[-1] if found else None


def read_metadata(path: Path) -> dict[str, Any]:
    return json.loads((path / COMPLETE_MARKER).read_text())


def _rng_file(path: Path, rank: int) -> Path:
    return path / f"rng-rank{rank:05d}.pt"


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state(), "tensor_parallel": rng.states()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    metadata: dict[str, Any],
    keep_last: int,
    prepare_state: Callable[[Path], Callable[[], None]],
    background: Optional[BackgroundSaver] = None,
) -> Path:
    """Collective: every rank calls it. ``prepare_state(path)`` returns the write of this
    rank's part of the training state, done before the checkpoint is marked complete: now,
    or with ``background`` in a thread (the caller's ``wait`` waits for it)."""
    if background is not None:
        background.wait()
    path = _start_checkpoint(run_dir, step)
    write = prepare_state(path)
    if background is None:
        write()
        _mark_complete(path, step, metadata, keep_last)
        dist.barrier()
        return path

    def finish() -> None:
        write()
        _mark_complete(path, step, metadata, keep_last, background.group)

    background.start(finish, name=f"checkpoint-{path.name}")
    return path


def _start_checkpoint(run_dir: str | Path, step: int) -> Path:
    """Collective: the checkpoint's directory, emptied of any leftover, with this rank's RNG state."""
    path = checkpoint_root(run_dir) / tag_for(step)
    rank = dist.get_rank()
    if rank == 0 and path.exists():  # a leftover from a run that died while writing it
        shutil.rmtree(path)
    dist.barrier()
    path.mkdir(parents=True, exist_ok=True)
    torch.save(_rng_state(), _rng_file(path, rank))
    return path


def _mark_complete(
    path: Path, step: int, metadata: dict[str, Any], keep_last: int, group: Optional[Any] = None
) -> None:
    """Collective over ``group``: once every rank has written its part, rank 0 writes
    ``complete.json`` and prunes old checkpoints."""
    dist.barrier(group=group)
    if dist.get_rank() == 0:
        tmp = path / (COMPLETE_MARKER + ".tmp")
        tmp.write_text(json.dumps({"step": step, **metadata}, indent=2) + "\n")
        os.replace(tmp, path / COMPLETE_MARKER)
        _prune(path.parent, keep_last)


def _prune(root: Path, keep_last: int) -> None:
    """Keep the newest ``keep_last`` complete checkpoints; drop older ones and any
    incomplete leftover older than the newest complete one."""
    complete = complete_checkpoints(root)
    if not complete:
        return
    keep = {p.name for p in complete[-max(keep_last, 1) :]}
    newest = complete[-1].name
    for path in root.iterdir():
        if path.is_dir() and _TAG.match(path.name) and path.name not in keep and path.name < newest:
            shutil.rmtree(path, ignore_errors=True)


def restore_rng(path: Path) -> None:
    """This rank's RNG state, when the checkpoint has one for it."""
    rng_file = _rng_file(path, dist.get_rank())
    if rng_file.exists():  # absent when resuming on more ranks than saved
        state = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(state["cpu"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])
        rng.set_states(state["tensor_parallel"])


def resolve_resume(resume: str, run_dir: str | Path) -> Optional[Path]:
    """The checkpoint to start from: ``auto`` or ``force`` (newest complete one, if any),
    ``never``, or a path."""
    if resume == "never":
        existing = latest_complete(checkpoint_root(run_dir))
        if existing is not None:
            # Training on would mix two runs' checkpoints (and pruning could drop the new ones).
            raise FileExistsError(
                f"run_dir={run_dir} already holds checkpoints ({existing.name}) and resume=never; "
                "choose another run_dir, delete them, or resume=auto to continue that run"
            )
        return None
    if resume in ("auto", "force"):
        return latest_complete(checkpoint_root(run_dir))
    path = Path(resume)
    if not is_complete(path):
        raise FileNotFoundError(f"resume={resume}: not a complete checkpoint directory (no {COMPLETE_MARKER})")
    return path


def find_checkpoint(path: str | Path) -> Path:
    """Accept a run directory (its newest complete checkpoint), a ``checkpoints/`` directory,
    or one checkpoint directory."""
    path = Path(path)
    if is_complete(path):
        return path
    for root in (checkpoint_root(path), path):
        latest = latest_complete(root)
        if latest is not None:
            return latest
    raise FileNotFoundError(
        f"{path}: no complete checkpoint here (expected a run dir, its checkpoints/, or a step-N dir)"
    )


def model_config_from_metadata(metadata: dict[str, Any]) -> ModelConfig:
    config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), metadata["model"]))
    assert isinstance(config, ModelConfig)
    return config
