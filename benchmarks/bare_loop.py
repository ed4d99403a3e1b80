"""The baseline the benchmarks compare against: the framework's GPT with nothing but torch
around it, nanoGPT style (the model on the device, bf16 autocast over fp32 weights when the
run is bf16, fused AdamW, plain cross-entropy, gradient clipping)."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from pretrain.config import Precision, TrainConfig
from pretrain.model import GPT
from pretrain.model_config import ModelConfig
from pretrain.objectives import Batch


class BareLoop:
    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, device: torch.device, precision: Precision) -> None:
        self.model = GPT(model_cfg, seed=cfg.train.seed).to(device)
        self.forward = torch.compile(self.model) if cfg.train.compile else self.model
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2), fused=device.type == "cuda"
        )
        self.grad_clip = cfg.optim.grad_clip
        low_precision = {Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16}.get(precision)
        self.autocast = lambda: (
            torch.autocast(device.type, dtype=low_precision) if low_precision is not None else contextlib.nullcontext()
        )

    def step(self, batch: Batch) -> None:
        with self.autocast():
            logits = self.forward(batch.input_ids, batch.attention)
        token_losses = F.cross_entropy(logits.float().flatten(0, 1), batch.labels.flatten(), reduction="none")
        mask = batch.loss_mask.flatten().float()
        loss = (token_losses * mask).sum() / mask.sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()

    def synchronize(self) -> None:
        """Wait for the queued GPU work, so a timer stopped next measures it."""
        if self.model.embed.tokens.weight.device.type == "cuda":
            torch.cuda.synchronize()
