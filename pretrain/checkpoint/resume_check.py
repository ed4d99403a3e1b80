"""What a resume may change: the config a checkpoint recorded against the one given now.

Every checkpoint's ``complete.json`` holds the resolved config it was trained with. Resuming
compares the new config with it: settings that change what the run means (model, objective,
data, optimizer and schedule, batch and sequence sizes, seed, tokenizer) must agree, or the
resume is refused naming each of them; ``resume=force`` continues anyway and the change is
recorded in ``<run_dir>/config_changes.jsonl``. The settings in :data:`FREE_SETTINGS` (and the
conditional ones below) may change freely; the README ("Checkpoints and resume") lists them.
The data is compared by what it is (``pretrain.data.sources.data_identity``: its tokenizer,
shards and their sizes, and the blend weights), not by where it lies: a moved corpus resumes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from pretrain.checkpoint.directory import model_config_from_metadata
from pretrain.config import OptimConfig, TrainConfig, as_plain_dict
from pretrain.model.config import ModelConfig
from pretrain.model.gpt import GPT
from pretrain.training.optim import lr_multiplier

# Cadence, logging and engineering switches: they change how a run is watched or executed,
# not what it learns. A key names a setting or a whole group (``logging``).
FREE_SETTINGS = (
    "run_dir",
    "resume",
    "logging",
    "train.log_every",
    "train.eval_every",
    "train.eval_batches",
    "train.eval_tasks",
    "train.save_every",
    "train.save_at_end",
    "train.keep_last",
    "train.async_save",
    "train.sample_log",
    "train.activation_checkpointing",
    "train.compile",
    "train.nonfinite_policy",
    "train.peak_tflops",
    # The loss of a global batch does not depend on how it is cut into micro-batches.
    "train.micro_batch_size",
    "data.valid_split",
    # A path may move; the tokenizer itself is compared by its hash.
    "data.tokenizer",
    # Compared by what the data is (``data_changes``), not by its paths.
    "data.path",
    "data.sources",
    # A resumed run loads its checkpoint, never the initial weights (issue 17's init_from).
    "init_from",
    # Checkpoints are saved by whole-model parameter name: any layout loads them.
    "parallel",
)
CHANGES_FILENAME = "config_changes.jsonl"


@dataclass(frozen=True)
class Change:
    setting: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.setting}: {_short(self.old)} -> {_short(self.new)}"


def _short(value: Any) -> str:
    if isinstance(value, str):  # a path or a name: whole, so the message names it
        return value
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train.seq_len": 64, ...}``; lists stay whole values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _under(setting: str, groups: tuple[str, ...]) -> bool:
    return any(setting == group or setting.startswith(group + ".") for group in groups)


def schedule_allows(old_max_steps: int, new_max_steps: int, optim: OptimConfig, step: int) -> bool:
    """A new ``max_steps`` is free when every learning rate used so far is the one the new
    schedule gives too (constant schedules, a warmup not yet over, WSD before its decay)."""
    return all(lr_multiplier(s, optim, old_max_steps) == lr_multiplier(s, optim, new_max_steps) for s in range(step))


def _describe_data(identities: list[dict]) -> str:
    return "; ".join(
        f"{source['path']} (weight {source['weight']}, {source['num_tokens']} tokens"
        + (f", {source['shards']} shards, digest {source['digest']})" if "digest" in source else ")")
        for source in identities
    )


def data_changes(recorded: list[dict], new: list[dict]) -> list[Change]:
    """The data, compared by what it is (see ``data_identity``) and not by its paths."""

    def what(identities: list[dict]) -> list[dict]:
        return [{key: value for key, value in source.items() if key != "path"} for source in identities]

    return [] if what(recorded) == what(new) else [Change("data", _describe_data(recorded), _describe_data(new))]


def config_changes(metadata: dict[str, Any], new: TrainConfig, tokenizer_hash: str, data: list[dict]) -> list[Change]:
    """The settings that differ between a checkpoint's recorded config and ``new`` and are
    not free to change (``data``: what the new run trains on, see ``data_identity``).
    Settings one side lacks (added to the schema since) are skipped."""
    recorded = metadata["config"]
    old_flat, new_flat = flatten(recorded), flatten(as_plain_dict(new))
    changes = []
    for setting in sorted(old_flat.keys() & new_flat.keys()):
        old_value, new_value = old_flat[setting], new_flat[setting]
        if old_value == new_value or _under(setting, FREE_SETTINGS):
            continue
        if setting == "train.max_steps" and schedule_allows(old_value, new_value, new.optim, metadata["step"]):
            continue
        changes.append(Change(setting, old_value, new_value))
    old_tokenizer = metadata.get("tokenizer", {}).get("tokenizer_hash", "")
    if old_tokenizer and tokenizer_hash and old_tokenizer != tokenizer_hash:
        changes.append(Change("tokenizer", old_tokenizer[:12], tokenizer_hash[:12]))
    return changes + data_changes(metadata["data"], data)


def reshaped_parameters(metadata: dict[str, Any], model: ModelConfig) -> list[str]:
    """Parameters whose shape differs between the checkpoint's model and ``model`` (or that
    only one of them has): no resume, forced or not, can load those."""
    with torch.device("meta"):  # shapes only, no memory
        saved = {name: p.shape for name, p in GPT(model_config_from_metadata(metadata)).named_parameters()}
        wanted = {name: p.shape for name, p in GPT(model).named_parameters()}
    return sorted(name for name in saved.keys() | wanted.keys() if saved.get(name) != wanted.get(name))


def check_resume(
    checkpoint: Optional[Path],
    new: TrainConfig,
    model: ModelConfig,
    tokenizer_hash: str,
    data: list[dict],
    force: bool,
) -> list[Change]:
    """Refuse (ValueError naming every changed setting) unless ``force``; return the changes.
    ``model``: the model config the run builds (vocabulary size filled in)."""
    if checkpoint is None:
        return []
    metadata = json.loads((checkpoint / "complete.json").read_text())
    changes = config_changes(metadata, new, tokenizer_hash, data)
    if changes and not force:
        raise ValueError(
            f"resume: {checkpoint} was trained with other settings ({'; '.join(map(str, changes))}); "
            "use another run_dir for a new run, or resume=force to continue with the new settings"
        )
    reshaped = reshaped_parameters(metadata, model) if changes else []
    if reshaped:
        raise ValueError(
            f"resume=force: {checkpoint} cannot be loaded into the new model, whose parameters differ in shape "
            f"({', '.join(reshaped[:3])}{', ...' if len(reshaped) > 3 else ''}; {'; '.join(map(str, changes))}); "
            "use another run_dir for the new model"
        )
    return changes


def record_changes(run_dir: Path, step: int, changes: list[Change]) -> None:
    """Keep what ``resume=force`` accepted, next to the run's checkpoints."""
    if not changes:
        return
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "step": step,
        "changes": [{"setting": c.setting, "old": c.old, "new": c.new} for c in changes],
    }
    with open(run_dir / CHANGES_FILENAME, "a") as stream:
        stream.write(json.dumps(entry) + "\n")
