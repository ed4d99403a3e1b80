"""Perplexity and bits per byte of validation token shards or of a text file."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from data_pipeline.formats.jsonl import read_jsonl
from data_pipeline.formats.token_shards import ShardError, TokenShard, find_shards
from pretrain.evaluation.contamination import clean_metrics
from pretrain.evaluation.scoring import StreamScore, score_streams
from pretrain.evaluation.tasks import TaskConfig
from pretrain.inference.tokenizer import StartToken, TextTokenizer
from pretrain.model.gpt import GPT


def shard_streams(task: TaskConfig, tokenizer: TextTokenizer) -> list[np.ndarray]:
    """The token stream of every shard of the task's split (packed documents, as in training)."""
    prefixes = find_shards(task.path, task.split)
    if not prefixes:
        raise ShardError(f"task {task.label}: no '{task.split}-*' token shards in {task.path}; set the task's split")
    return [TokenShard(prefix, tokenizer.special.tokenizer_hash or None).tokens for prefix in prefixes]


def text_streams(task: TaskConfig, tokenizer: TextTokenizer, start_token: StartToken) -> list[np.ndarray]:
    """One stream per document, each after the start token: ``{"text"}`` records of a
    .jsonl file, or the whole of any other file."""
    if task.path.endswith(".jsonl"):
        texts = []
        for number, record in read_jsonl(task.path):
            if not isinstance(record.get("text"), str):
                raise ValueError(f'{task.path}:{number}: a perplexity record needs a "text" string')
            texts.append(record["text"])
    else:
        texts = [Path(task.path).read_text(encoding="utf-8")]
    start = tokenizer.start_ids(start_token)
    return [np.asarray(start + ids, dtype=np.int64) for ids in tokenizer.encode_batch(texts)]


def perplexity(
    model: GPT,
    tokenizer: TextTokenizer,
    task: TaskConfig,
    batch_size: int,
    start_token: StartToken,
    clean: Optional[Sequence[bool]] = None,
) -> dict[str, float]:
    seq_len = task.seq_len or model.cfg.max_seq_len
    if not 1 <= seq_len <= model.cfg.max_seq_len:
        raise ValueError(
            f"task {task.label}: seq_len={seq_len} must be in [1, model.max_seq_len={model.cfg.max_seq_len}]"
        )
    is_shards = Path(task.path).is_dir()
    streams = shard_streams(task, tokenizer) if is_shards else text_streams(task, tokenizer, start_token)

    def scores(chosen: Sequence[np.ndarray]) -> dict[str, float]:
        return stream_metrics(
            score_streams(model, chosen, seq_len, batch_size, tokenizer.token_bytes(), task.limit, desc=task.label)
        )

    metrics = scores(streams)
    if metrics["tokens"] == 0:
        raise ValueError(f"task {task.label}: {task.path} holds no token to predict")
    if clean is not None:  # the documents with no n-gram in the training data, scored again alone
        metrics.update(clean_metrics(scores, clean, streams))
    return metrics


def stream_metrics(score: StreamScore) -> dict[str, float]:
    loss = score.nll / max(score.tokens, 1)
    return {
        "loss": loss,
        "ppl": math.exp(min(loss, 50.0)),
        "bits_per_byte": score.nll / math.log(2) / score.num_bytes if score.num_bytes else float("nan"),
        "tokens": float(score.tokens),
    }
