"""Context-parallel checks in one torchrun launch, for test_context_parallel.py.

    torchrun --nproc_per_node=N tests/pretrain/context_parallel_worker.py RUNS.json OUT.json

Runs named ``grads-*`` train the model directly for 10 SGD steps, split over all N ranks as
one context-parallel group, next to the same model on whole sequences in the same process
(the reference), and report the largest difference of the loss and of the gradients at
each step, relative to the largest value (``loss_error``, ``grad_error``; after each step
the split model takes the reference's weights, so every step compares gradients at the same
point), and the collectives of the first step's forward and backward passes
(``collectives``). Their overrides are train config overrides (model, objective, seq_len)
plus ``recompute=true`` for activation checkpointing. Other runs are Trainer runs, reporting
their logged ``losses`` and ``grad_norms``.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from dataclasses import replace
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from parallel_worker import main  # this script's directory is on sys.path

from data_pipeline.formats.special_tokens import SpecialTokens
from pretrain.config import load_train_config
from pretrain.model.gpt import GPT, LayerFactory
from pretrain.model.loss import sample_mean_loss, token_losses
from pretrain.objectives import build_objective
from pretrain.parallel.context import context_parallel
from pretrain.parallel.layout import Layout, build_grid
from pretrain.training.trainer import Trainer

SPECIAL = SpecialTokens.synthetic(256, num_sentinels=100)
STEPS, LR, BATCH = 10, 0.1, 2
COUNTED = ("all_gather_single", "reduce_scatter_single", "all_reduce")


def windows(step: int, batch: int, length: int) -> torch.Tensor:
    """Ordinary tokens with an EOS every ~10 tokens, so documents end inside every chunk."""
    generator = torch.Generator().manual_seed(step)
    tokens = torch.randint(105, 256, (batch, length), generator=generator)
    return torch.where(torch.rand(batch, length, generator=generator) < 0.1, SPECIAL.eos_id, tokens)


@contextlib.contextmanager
def counting_collectives() -> Iterator[Counter]:
    """Count the collectives of torch.distributed called meanwhile (the context-parallel
    code looks them up on the module at each call)."""
    counts: Counter = Counter({name: 0 for name in COUNTED})
    originals = {name: getattr(dist, name) for name in COUNTED}

    def counted(name: str) -> Callable[..., Any]:
        def call(*args, **kwargs):  # type: ignore[no-untyped-def]
            counts[name] += 1
            return originals[name](*args, **kwargs)

        return call

    for name in COUNTED:
        setattr(dist, name, counted(name))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(dist, name, original)


def relative_error(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> float:
    """The largest difference over the largest value (a model's gradients, all together)."""
    largest = max(float(t.abs().max()) for t in expected)
    return max(float((a - e).abs().max()) for a, e in zip(actual, expected)) / max(largest, 1e-12)


def gradient_check(overrides: list[str], process) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    recompute = "recompute=true" in overrides
    cfg = load_train_config([o for o in overrides if o != "recompute=true"])
    size = process.world_size
    context = context_parallel(build_grid(Layout(tp=1, pp=1, dp=1, cp=size)), size)
    model_cfg = replace(cfg.model, vocab_size=SPECIAL.vocab_size)
    reference = GPT(model_cfg, seed=cfg.train.seed)
    layers = LayerFactory()
    layers.context = context
    split = GPT(model_cfg, layers, seed=cfg.train.seed)
    split.activation_checkpointing = recompute
    objective = build_objective(cfg.objective, SPECIAL, cfg.train.seq_len, cfg.train.seed)
    loss_error = grad_error = 0.0
    counts: dict[str, dict[str, int]] = {}
    for step in range(STEPS):
        batch = objective(windows(step, BATCH, objective.window_length()), torch.arange(BATCH) + step * BATCH)
        expected = sample_mean_loss(
            token_losses(reference(batch.input_ids, batch.attention), batch.labels), batch.loss_mask
        )
        expected.backward()
        local = context.local_batch(batch)
        with counting_collectives() as forward:
            logits = split(local.input_ids, local.attention)
            loss = context.sample_mean_loss(token_losses(logits, local.labels), local.loss_mask)
        with counting_collectives() as backward:
            loss.backward()
        if step == 0:
            counts = {"forward": dict(forward), "backward": dict(backward)}
        # What DeepSpeed does over the dp × cp ranks: average the gradients and the loss.
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        loss_error = max(loss_error, relative_error([mean_loss / size], [expected.detach()]))
        for param in split.parameters():
            dist.all_reduce(param.grad)
            param.grad /= size
        grads = [p.grad for p in split.parameters()]
        grad_error = max(grad_error, relative_error(grads, [p.grad for p in reference.parameters()]))
        with torch.no_grad():
            for ours, theirs in zip(split.parameters(), reference.parameters()):
                theirs -= LR * theirs.grad
                ours.copy_(theirs)
                ours.grad = theirs.grad = None
    return {"loss_error": loss_error, "grad_error": grad_error, "collectives": counts}


def report(name: str, overrides: list[str], process) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    if name.startswith("grads-"):
        return gradient_check(overrides, process)
    records = Trainer(load_train_config(overrides), process).fit()
    return {"losses": [r["loss"] for r in records], "grad_norms": [r["grad_norm"] for r in records]}


if __name__ == "__main__":
    main(*sys.argv[1:3], result_of=report)
