"""A training run replayed by an independent implementation: the tiny Llama trained for 30
logged steps (warm-up, cosine decay, weight-decay groups, gradient clipping, 2 micro-batches
per step), then the same steps again with transformers' LlamaForCausalLM, torch's AdamW and a
learning-rate schedule written out here, on the windows read straight from the token shards
the run logged (``train.sample_log``). Every step's loss and gradient norm agree, and the
logged ``lr`` is the one each update applied."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.pretrain.support.hf_models import init_from_overrides, save_tiny_model

STEPS, WARMUP, LR, MIN_LR_RATIO, WEIGHT_DECAY, CLIP = 30, 5, 3e-3, 0.1, 0.1, 2.0
BETAS, EPS = (0.9, 0.95), 1e-8
SEQ_LEN, MICRO_BATCH, GLOBAL_BATCH = 32, 2, 4  # one process: 2 micro-batches per step


def scheduled_lr(step: int) -> float:
    """Optimizer step ``step`` (0-based): linear warm-up that reaches ``LR`` at its last step,
    then cosine decay to ``MIN_LR_RATIO · LR`` at the run's last step (as GPT-3, Brown et al.
    2020, appendix B)."""
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / (STEPS - WARMUP)
    return LR * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress)))


def windows_of(corpus: Path, split: str, window: int) -> list[np.ndarray]:
    """The split's windows as the data section of the README defines them: each shard's
    tokens (in shard order) cut into consecutive ``window``-token pieces, the rest dropped."""
    pieces = []
    for manifest in sorted(corpus.glob(f"{split}-*.json")):
        dtype = np.dtype(json.loads(manifest.read_text())["dtype"])
        tokens = np.fromfile(manifest.with_suffix(".bin"), dtype=dtype).astype(np.int64)
        pieces += [tokens[start : start + window] for start in range(0, len(tokens) - window + 1, window)]
    return pieces


@pytest.fixture(scope="module")
def run(token_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict]]:
    from pretrain.config import load_train_config
    from pretrain.parallel.process_groups import init_distributed
    from pretrain.training.trainer import Trainer

    checkpoint = save_tiny_model(tmp_path_factory.mktemp("llama"), "llama")
    run_dir = tmp_path_factory.mktemp("replayed-run")
    overrides = init_from_overrides(
        token_corpus,
        checkpoint,
        run_dir,
        GLOBAL_BATCH,
        f"train.max_steps={STEPS}",
        "train.sample_log=true",
        "optim=adamw",
        f"optim.lr={LR}",
        f"optim.warmup_steps={WARMUP}",
        "optim.schedule=cosine",
        f"optim.min_lr_ratio={MIN_LR_RATIO}",
        f"optim.weight_decay={WEIGHT_DECAY}",
        f"optim.beta1={BETAS[0]}",
        f"optim.beta2={BETAS[1]}",
        f"optim.eps={EPS}",
        f"optim.grad_clip={CLIP}",
        "train.precision=fp32",
    )
    Trainer(load_train_config(overrides), init_distributed()).fit()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return checkpoint, run_dir, records


def replay(checkpoint: Path, token_corpus: Path, run_dir: Path) -> list[dict]:
    """The logged samples trained again with transformers and torch alone."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).train()
    # Matrices decay; norms (vectors) and the token embedding do not.
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed_tokens" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or "embed_tokens" in n]
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS)
    windows = windows_of(token_corpus, "train", SEQ_LEN + 1)
    log = [json.loads(line) for line in (run_dir / "samples" / "dp-rank-00000.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == list(range(1, STEPS + 1))
    replayed = []
    for step, entry in enumerate(log):
        ids = torch.from_numpy(np.stack([windows[window] for source, window in entry["samples"]]))
        assert all(source == 0 for source, _ in entry["samples"]) and len(ids) == GLOBAL_BATCH
        for group in optimizer.param_groups:
            group["lr"] = scheduled_lr(step)
        optimizer.zero_grad()
        losses = []
        for micro in ids.split(MICRO_BATCH):  # gradient accumulation: the mean of the micro-batches
            logits = model(input_ids=micro[:, :-1]).logits
            loss = F.cross_entropy(logits.flatten(0, 1), micro[:, 1:].flatten())
            (loss / (GLOBAL_BATCH // MICRO_BATCH)).backward()
            losses.append(loss.item())
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP).item()
        optimizer.step()
        replayed.append({"step": step + 1, "loss": sum(losses) / len(losses), "grad_norm": grad_norm})
    return replayed


def test_a_logged_run_replays_step_by_step(run: tuple[Path, Path, list[dict]], token_corpus: Path) -> None:
    checkpoint, run_dir, records = run
    replayed = replay(checkpoint, token_corpus, run_dir)
    assert [r["step"] for r in records] == [r["step"] for r in replayed]
    for record, expected in zip(records, replayed):
        assert record["loss"] == pytest.approx(expected["loss"], rel=1e-6), record["step"]
        assert record["grad_norm"] == pytest.approx(expected["grad_norm"], rel=1e-6), record["step"]
        # The lr of step N is the one its update applied (not the next step's).
        assert record["lr"] == pytest.approx(scheduled_lr(record["step"] - 1), rel=1e-12), record["step"]
    # Every feature acted: clipping on some steps, not all; the warm-up and the decay.
    clipped = [r["grad_norm"] > CLIP for r in records]
    assert any(clipped) and not all(clipped), [r["grad_norm"] for r in records]
    assert records[0]["lr"] == pytest.approx(LR / WARMUP) and records[-1]["lr"] < 0.15 * LR
    assert records[-1]["loss"] < records[0]["loss"] - 1.0  # it learned
