"""``train init_from=DIR``: start a run from a Hugging Face checkpoint, or from another
run of ours (a run directory or one of its checkpoints: e.g. fine-tuning a pretrained run).

The model config comes from ``DIR/config.json`` (or the run checkpoint's metadata); after the
model (or this rank's pipeline stage) is built, every rank copies in its slices of the
weights. It is a start, not a resume: only the weights are taken, the optimizer, its
warm-up, the step and the data position start fresh, and a run that already has
checkpoints resumes from them instead.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

from torch import nn

from data_pipeline.formats.special_tokens import SpecialTokens
from pretrain.checkpoint.directory import find_checkpoint, model_config_from_metadata, read_metadata
from pretrain.checkpoint.sharded import load_weights
from pretrain.config import TrainConfig
from pretrain.hf.import_config import model_config_from_hf
from pretrain.hf.weights import ReadStats, load_hf_weights
from pretrain.model.config import ModelConfig
from pretrain.model.lora import is_adapter
from pretrain.parallel.pipeline import canonical_parameters


def run_checkpoint(init_from: str) -> Optional[Path]:
    """The checkpoint ``init_from`` names when it is one of our runs; None for a Hugging Face directory."""
    if (Path(init_from) / "config.json").is_file():
        return None
    try:
        return find_checkpoint(init_from)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"init_from={init_from}: neither a Hugging Face checkpoint (config.json) nor a run directory or checkpoint "
            "of this project (checkpoints/step-N)"
        ) from None


def with_imported_model(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with ``model`` taken from ``init_from``'s config.json or run checkpoint (unchanged without init_from)."""
    if not cfg.init_from:
        return cfg
    checkpoint = run_checkpoint(cfg.init_from)
    if checkpoint is not None:
        return replace(cfg, model=model_config_from_metadata(read_metadata(checkpoint)))
    model = model_config_from_hf(Path(cfg.init_from))
    if model.sliding_window is not None and cfg.train.seq_len > model.sliding_window:
        raise ValueError(
            f"train.seq_len={cfg.train.seq_len} exceeds the checkpoint's sliding_window={model.sliding_window}, "
            f"and sliding-window attention is not implemented here; set train.seq_len<={model.sliding_window}"
        )
    return replace(cfg, model=model)


def with_grown_vocabulary(init_from: Optional[str], model: ModelConfig, special: SpecialTokens) -> ModelConfig:
    """The imported ``model`` with rows for the ids a tokenizer grown by tokenize's
    ``add_special_tokens=true`` appended past the checkpoint's embedding. Those rows keep
    the model's initialization, N(0, model.init_std); only special ids may need them, so a
    tokenizer that is simply larger than the checkpoint is still refused."""
    if init_from and (checkpoint := run_checkpoint(init_from)) is not None:
        trained_with = read_metadata(checkpoint)["tokenizer"].get("tokenizer_hash", "")
        if trained_with != special.tokenizer_hash:
            raise ValueError(
                f"init_from={init_from} was trained with tokenizer {trained_with[:12] or '<none>'}, but data.path's is "
                f"{special.tokenizer_hash[:12] or '<none>'}; "
                "tokenize the data with the run's tokenizer (<run dir>/tokenizer)"
            )
        return model
    if not init_from or special.vocab_size <= model.padded_vocab_size:
        return model
    new_ids = set(range(model.padded_vocab_size, special.vocab_size))
    if not new_ids <= {special.mask_id, *special.sentinel_ids}:
        raise ValueError(
            f"the tokenizer has {special.vocab_size} ids but init_from={init_from} has {model.padded_vocab_size} "
            "embedding rows, and the ids past them are not the mask and sentinels tokenize's add_special_tokens=true "
            "appends; tokenize with the checkpoint's own tokenizer"
        )
    return replace(model, vocab_size=special.vocab_size)


def load_initial_weights(cfg: TrainConfig, model: nn.Module, resuming: bool) -> Optional[ReadStats]:
    """Fill this rank's freshly built ``model`` from ``init_from``; None when there is
    nothing to do (no init_from, or the run resumes from its own checkpoint). LoRA
    adapters are not in it: with ``lora.rank`` > 0 the (frozen) base is read on resume
    too, since checkpoints hold only the adapters."""
    if not cfg.init_from or (resuming and not cfg.lora.enabled):
        return None
    params = {name: param for name, param in canonical_parameters(model).items() if not is_adapter(name)}
    checkpoint = run_checkpoint(cfg.init_from)
    if checkpoint is not None:
        return ReadStats(tensors=len(params), elements=load_weights(checkpoint, params))
    return load_hf_weights(Path(cfg.init_from), cfg.model, params)


def start_message(cfg: TrainConfig, built: ModelConfig, resume_path: Optional[Path], stats: Optional[ReadStats]) -> str:
    if resume_path is not None and cfg.lora.enabled:
        return f"resuming the LoRA adapters of {resume_path} on the base read again from init_from={cfg.init_from}"
    if resume_path is not None:
        return f"init_from={cfg.init_from} was ignored: resuming from this run's checkpoint {resume_path}"
    model = cfg.model
    read = "" if stats is None else f"; rank 0 read {stats.tensors} tensors, {stats.elements:,} values"
    if (checkpoint := run_checkpoint(str(cfg.init_from))) is not None:
        return (
            f"initialized from the weights of {checkpoint} (model.* from its metadata{read}); "
            "the optimizer, step and data start fresh"
        )
    vocabulary = f"vocabulary {model.vocab_size}"
    if built.padded_vocab_size > model.padded_vocab_size:
        vocabulary += (
            f" grown to {built.padded_vocab_size} rows for the tokenizer's added tokens, "
            f"new rows N(0, {built.init_std})"
        )
    return (
        f"initialized from {cfg.init_from} ({model.hf_architecture}: {model.n_layers} layers, d_model {model.d_model}, "
        f"{vocabulary}, model.* from its config.json{read}); the optimizer and its warm-up start fresh"
    )
