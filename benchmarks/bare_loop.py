"""The baseline the benchmarks compare against: a model with nothing but torch around it,
written the way a user would (nanoGPT style): the model on the device, bf16 autocast over
fp32 weights when the run is bf16, torch's fused AdamW, plain cross-entropy, gradient
clipping. The model is our GPT (``of_gpt``) or any module that maps a batch to logits
(benchmarks/gpu/hf_llama.py: transformers' Llama of the same shape)."""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.config import OptimConfig, Precision, TrainConfig
from pretrain.model.config import ModelConfig
from pretrain.model.gpt import GPT
from pretrain.objectives import Batch

LOW_PRECISION = {Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16}


class BareLoop:
    def __init__(
        self,
        model: nn.Module,
        logits_of: Callable[[nn.Module, Batch], torch.Tensor],
        optim: OptimConfig,
        precision: Precision,
        compile: bool,
    ) -> None:
        self.model = model
        self.forward = torch.compile(model) if compile else model
        self.logits_of = logits_of
        device = next(model.parameters()).device
        self.device = device
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=optim.lr, betas=(optim.beta1, optim.beta2), fused=device.type == "cuda"
        )
        self.grad_clip = optim.grad_clip
        low_precision = LOW_PRECISION.get(precision)
        self.autocast = lambda: (
            torch.autocast(device.type, dtype=low_precision) if low_precision is not None else contextlib.nullcontext()
        )

    @classmethod
    def of_gpt(cls, model_cfg: ModelConfig, cfg: TrainConfig, device: torch.device, precision: Precision) -> BareLoop:
        """Our GPT, initialized as the trainer initializes it."""
        model = GPT(model_cfg, seed=cfg.train.seed).to(device)
        return cls(
            model, lambda gpt, batch: gpt(batch.input_ids, batch.attention), cfg.optim, precision, cfg.train.compile
        )

    def step(self, batch: Batch) -> None:
        with self.autocast():
            logits = self.logits_of(self.forward, batch)
        token_losses = F.cross_entropy(logits.float().flatten(0, 1), batch.labels.flatten(), reduction="none")
        mask = batch.loss_mask.flatten().float()
        loss = (token_losses * mask).sum() / mask.sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()

    def synchronize(self) -> None:
        """Wait for the queued GPU work, so a timer stopped next measures it."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
