"""Writing an export directory (``python -m pretrain.export``):

- ``consolidated.safetensors``: every weight under our own names, with the model config and
  the tokenizer metadata as JSON in the file's header;
- ``tokenizer.model`` and ``tokenizer_meta.json``, the run's tokenizer (or the Hugging Face
  tokenizer files of a run tokenized with one);
- with ``hf``: ``config.json`` (``LlamaForCausalLM``, or the architecture the model was
  imported from), ``generation_config.json``, ``model.safetensors`` (Hugging Face names)
  and the transformers tokenizer files, for ``AutoModelForCausalLM`` and
  ``AutoTokenizer.from_pretrained(output_dir)``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from data_pipeline.formats.special_tokens import SpecialTokens
from data_pipeline.formats.tokenizer_files import MODEL_FILENAME
from data_pipeline.tokenizer.hf_export import export_transformers_tokenizer
from data_pipeline.tokenizer.hf_tokenizer import copy_hf_tokenizer, is_hf_tokenizer
from pretrain.hf.export_config import check_exportable, hf_config
from pretrain.hf.names import hf_state_dict
from pretrain.inference.tokenizer import TextTokenizer
from pretrain.model.config import ModelConfig

CONSOLIDATED_FILENAME = "consolidated.safetensors"
HF_WEIGHTS_FILENAME = "model.safetensors"


def cast(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {name: tensor.to(dtype).contiguous() for name, tensor in state.items()}


def save_shareable(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors writes mode 0600; an export is meant to be shared, so it gets the mode
    any new file gets here (0644 under the usual umask)."""
    save_file(state, str(path), metadata=metadata)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_consolidated(output_dir: Path, state: dict[str, torch.Tensor], header: dict[str, Any]) -> Path:
    path = output_dir / CONSOLIDATED_FILENAME
    save_shareable(state, path, {key: json.dumps(value) for key, value in header.items()})
    return path


def write_tokenizer(output_dir: Path, tokenizer: TextTokenizer, hf: bool) -> None:
    """The run's tokenizer: our SentencePiece files (and their transformers version), or
    the Hugging Face tokenizer the run's data was tokenized with, as it was."""
    if is_hf_tokenizer(tokenizer.directory):
        tokenizer.special.save(output_dir)
        copy_hf_tokenizer(tokenizer.directory, output_dir)
        return
    shutil.copyfile(tokenizer.directory / MODEL_FILENAME, output_dir / MODEL_FILENAME)
    tokenizer.special.save(output_dir)
    if hf and not export_transformers_tokenizer(output_dir, tokenizer.special):
        raise ImportError("the Hugging Face export needs transformers: pip install transformers (or hf=false)")


def write_hf_model(output_dir: Path, state: dict[str, torch.Tensor], cfg: ModelConfig, special: SpecialTokens) -> None:
    from transformers import GenerationConfig

    config = hf_config(cfg, special)
    config.dtype = next(iter(state.values())).dtype
    config.save_pretrained(str(output_dir))
    # The ids past the tokenizer's vocabulary only pad the embedding: never generate them.
    padding_ids = list(range(special.vocab_size, cfg.padded_vocab_size))
    generation = GenerationConfig(
        bos_token_id=special.bos_id,
        eos_token_id=special.eos_id,
        pad_token_id=special.pad_id,
        suppress_tokens=padding_ids or None,
    )
    generation.save_pretrained(str(output_dir))
    save_shareable(hf_state_dict(state), output_dir / HF_WEIGHTS_FILENAME, {"format": "pt"})


def write_export(
    output_dir: Path,
    state: dict[str, torch.Tensor],
    cfg: ModelConfig,
    tokenizer: TextTokenizer,
    header: dict[str, Any],
    hf: bool,
) -> None:
    if hf:
        check_exportable(cfg)  # before anything is written
    output_dir.mkdir(parents=True, exist_ok=True)
    write_consolidated(output_dir, state, header)
    write_tokenizer(output_dir, tokenizer, hf)
    if hf:
        write_hf_model(output_dir, state, cfg, tokenizer.special)
