"""The outside reference: transformers' ``LlamaForCausalLM`` of our model's shape (the config
``pretrain.export`` writes: RMSNorm, SwiGLU, rotary positions, the same widths, heads and
padded vocabulary), randomly initialized, with PyTorch SDPA attention, trained by the same
bare loop as our GPT."""

from __future__ import annotations

import torch
from bare_loop import BareLoop

from data_pipeline.formats.special_tokens import SpecialTokens
from pretrain.config import Precision, TrainConfig
from pretrain.hf.export_config import hf_config
from pretrain.model.config import ModelConfig


def llama_loop(
    model_cfg: ModelConfig, special: SpecialTokens, cfg: TrainConfig, device: torch.device, precision: Precision
) -> BareLoop:
    from transformers import LlamaForCausalLM

    config = hf_config(model_cfg, special)
    with torch.device(device):  # initialized where it trains
        model = LlamaForCausalLM._from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    model.train()
    # No KV cache while training (transformers would otherwise build one every forward pass).
    return BareLoop(
        model,
        lambda llama, batch: llama(input_ids=batch.input_ids, use_cache=False).logits,
        cfg.optim,
        precision,
        cfg.train.compile,
    )
