"""``python -m pretrain.export checkpoint=<run dir or checkpoint> output_dir=<dir>``:
consolidated safetensors and a Hugging Face directory (LlamaForCausalLM, or the architecture the
run was imported from) with its tokenizer.
Options: configs/export.yaml and docs/evaluation.md."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from omegaconf import MISSING

from pretrain.checkpoint import read_metadata
from pretrain.consolidate import consolidated_state_dict, find_checkpoint, model_config_from_metadata
from pretrain.hf.writer import cast, write_export
from pretrain.inference.command import hydra_command
from pretrain.inference.loading import DType, load_tokenizer, non_causal_warning

log = logging.getLogger(__name__)


@dataclass
class ExportConfig:
    # A run directory (its newest complete checkpoint), its checkpoints/, or a step-N directory.
    checkpoint: str = MISSING
    output_dir: str = MISSING
    # The tokenizer directory; default: <run dir>/tokenizer, the copy training keeps.
    tokenizer: Optional[str] = None
    # Also write the Hugging Face files (config, weights, tokenizer).
    hf: bool = True
    dtype: DType = DType.float32
    # Write into an output_dir that already holds files.
    overwrite: bool = False


def export(config: ExportConfig) -> Path:
    output_dir = Path(config.output_dir)
    if output_dir.is_dir() and any(output_dir.iterdir()) and not config.overwrite:
        raise FileExistsError(f"output_dir={output_dir} is not empty; choose another or set overwrite=true")
    checkpoint = find_checkpoint(config.checkpoint)
    metadata = read_metadata(checkpoint)
    model_cfg = model_config_from_metadata(metadata)
    warning = non_causal_warning(
        metadata, "the export holds its weights, but LlamaForCausalLM (and our own loader) run them with causal "
        "attention, so their predictions are not what it learned: use the weights, not the causal model"
    )
    if warning:
        log.warning(warning)
    tokenizer = load_tokenizer(checkpoint, config.tokenizer, metadata)
    log.info("consolidating %s", checkpoint)
    state = cast(consolidated_state_dict(checkpoint), getattr(torch, config.dtype.value))
    header = {"model": metadata["model"], "tokenizer": metadata["tokenizer"], "step": metadata.get("step")}
    write_export(output_dir, state, model_cfg, tokenizer, header, config.hf)
    log.info("exported %s to %s", checkpoint, output_dir)
    return output_dir


main = hydra_command("export", ExportConfig, export)

if __name__ == "__main__":
    main()
