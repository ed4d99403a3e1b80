"""``python -m pretrain.export checkpoint=<run dir or checkpoint> output_dir=<dir>``:
consolidated safetensors and a Hugging Face directory (LlamaForCausalLM, or the architecture the
run was imported from) with its tokenizer. A LoRA run exports its adapters merged into the
base (``lora=merge``) or the base and, in ``output_dir/adapter``, the adapters in peft's
format (``lora=adapter``).
Options: configs/export.yaml, docs/evaluation.md and docs/lora.md."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from omegaconf import MISSING

from data_pipeline.command import hydra_command
from pretrain.checkpoint.consolidate import (
    consolidated_state_dict,
    find_checkpoint,
    is_lora_checkpoint,
    lora_base_weights,
    model_config_from_metadata,
    model_state_dict,
    train_config_from_metadata,
)
from pretrain.checkpoint.directory import read_metadata
from pretrain.choices import Choice
from pretrain.hf.peft import write_adapter
from pretrain.hf.writer import cast, write_export
from pretrain.inference.loading import DType, load_tokenizer, non_causal_warning
from pretrain.parallel.process_groups import set_process_defaults

log = logging.getLogger(__name__)
ADAPTER_DIR = "adapter"


class LoraExport(Choice):
    merge = "merge"  # one model: W + (alpha / rank) · B A
    adapter = "adapter"  # the base, and the adapters in peft's format in output_dir/adapter


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
    # For a LoRA run's checkpoint: merge the adapters into the weights, or write them apart.
    lora: LoraExport = LoraExport.merge


def export(config: ExportConfig) -> Path:
    set_process_defaults()  # before DeepSpeed is imported and CUDA touched
    output_dir = Path(config.output_dir)
    if output_dir.is_dir() and any(output_dir.iterdir()) and not config.overwrite:
        raise FileExistsError(f"output_dir={output_dir} is not empty; choose another or set overwrite=true")
    checkpoint = find_checkpoint(config.checkpoint)
    metadata = read_metadata(checkpoint)
    model_cfg = model_config_from_metadata(metadata)
    warning = non_causal_warning(
        metadata,
        "the export holds its weights, but LlamaForCausalLM (and our own loader) run them with causal "
        "attention, so their predictions are not what it learned: use the weights, not the causal model",
    )
    if warning:
        log.warning(warning)
    apart = config.lora is LoraExport.adapter
    if apart and not is_lora_checkpoint(metadata):
        raise ValueError(
            f"lora=adapter: {checkpoint} was not trained with LoRA (lora.rank=0); export it with lora=merge"
        )
    if apart and not config.hf:
        raise ValueError("lora=adapter writes the adapters for peft onto the Hugging Face base; set hf=true")
    tokenizer = load_tokenizer(checkpoint, config.tokenizer, metadata)
    log.info("consolidating %s", checkpoint)
    dtype = getattr(torch, config.dtype.value)
    state = cast(lora_base_weights(checkpoint, metadata) if apart else model_state_dict(checkpoint, metadata), dtype)
    header = {"model": metadata["model"], "tokenizer": metadata["tokenizer"], "step": metadata.get("step")}
    write_export(output_dir, state, model_cfg, tokenizer, header, config.hf)
    if apart:
        adapters = cast(consolidated_state_dict(checkpoint), dtype)
        write_adapter(
            output_dir / ADAPTER_DIR, adapters, train_config_from_metadata(metadata).lora, str(output_dir.resolve())
        )
    log.info("exported %s to %s", checkpoint, output_dir)
    return output_dir


main = hydra_command("export", ExportConfig, export)

if __name__ == "__main__":
    main()
