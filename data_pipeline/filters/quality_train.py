"""``python -m data_pipeline.train_quality positives=DIR negatives=DIR output=FILE``: trains the
quality classifier of quality_model.py, as DCLM trains its fastText filter (Li et al. 2024,
"DataComp-LM", section 4.2; Joulin et al. 2017, "Bag of Tricks for Efficient Text
Classification"): positives are a reference set of the text wanted, negatives a sample of the
raw input; logistic loss, plain SGD over the documents in a seeded random order, with fastText's
learning rate falling linearly to 0. Written here in numpy (no fastText trainer installs offline).

A held-out share of both sets, chosen by a hash of each document's id (so the same documents
whatever the order or the files), is left out of training; its precision and recall at score 0.5
are printed and stored in the model's header. Same inputs, settings and seed: the same file, byte
for byte. Memory: the training documents' distinct feature rows (~8 bytes each; ~2,000 per
7 kB document) plus the table (buckets x dim x 4 bytes).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import xxhash
from omegaconf import MISSING

from data_pipeline.command import hydra_command
from data_pipeline.document import Document
from data_pipeline.filters.quality_model import TokenHasher, feature_rows, save_model, sigmoid
from data_pipeline.io.config import ReaderConfig
from data_pipeline.io.readers import BadInput, BadInputTally, read_unit, resolve_inputs
from data_pipeline.io.units import split_into_units

log = logging.getLogger("data_pipeline.train_quality")
_HELDOUT_SLOTS = 10_000


@dataclass
class TrainQualityConfig:
    positives: Any = MISSING  # the reference text: a file, folder, glob or list, as curation's input=
    negatives: Any = MISSING  # a sample of the raw input
    output: str = MISSING  # the model file (.npz) to write
    buckets: int = 1 << 20  # hashed feature rows (fastText: 2 M)
    dim: int = 16  # values per row (fastText: 100; two classes need few)
    word_ngrams: int = 2  # token n-grams up to this n (DCLM: 2)
    epochs: int = 5
    lr: float = 0.5  # at the start; falls linearly to 0 (fastText: 0.1; 0.5 fits two classes faster)
    seed: int = 0  # initial table and the order of the documents
    heldout_fraction: float = 0.1  # documents (by a hash of their id) kept out to measure precision and recall
    reader: ReaderConfig = field(default_factory=ReaderConfig)


@dataclass
class Examples:
    rows: list[np.ndarray] = field(default_factory=list)  # each document's distinct feature rows
    shares: list[np.ndarray] = field(default_factory=list)  # ... and the share of its features in each
    labels: list[float] = field(default_factory=list)


def validate(config: TrainQualityConfig) -> None:
    problems = [
        f"{name}={getattr(config, name)}: need >= 1"
        for name in ("buckets", "dim", "word_ngrams", "epochs")
        if getattr(config, name) < 1
    ]
    if config.lr <= 0:
        problems.append(f"lr={config.lr}: need > 0")
    if not 0 <= config.heldout_fraction < 1:
        problems.append(f"heldout_fraction={config.heldout_fraction}: need a fraction in [0, 1)")
    if problems:
        raise ValueError("invalid train_quality config: " + "; ".join(problems))


def is_heldout(doc_id: str, fraction: float) -> bool:
    return xxhash.xxh64_intdigest(doc_id.encode()) % _HELDOUT_SLOTS < fraction * _HELDOUT_SLOTS


def read_documents(spec: Any, reader: ReaderConfig, bad_input: BadInputTally) -> Iterator[Document]:
    """Documents of ``spec`` as curation reads its input (jsonl, jsonl.zst, json.gz, parquet, hf:)."""
    for unit in split_into_units(resolve_inputs(spec), 256, reader.hf):
        for item in read_unit(unit, reader):
            if isinstance(item, BadInput):
                bad_input.add(item)
            else:
                yield item


def load_examples(config: TrainQualityConfig) -> tuple[Examples, Examples]:
    """(training, held-out) examples of both sets; label 1 for positives."""
    training, heldout = Examples(), Examples()
    hash_tokens = TokenHasher()
    for setting, label in (("positives", 1.0), ("negatives", 0.0)):
        bad_input = BadInputTally(strict=False)
        count = 0
        for doc in read_documents(getattr(config, setting), config.reader, bad_input):
            rows, shares = feature_rows(hash_tokens(doc.tokens), config.buckets, config.word_ngrams)
            examples = heldout if is_heldout(doc.id, config.heldout_fraction) else training
            examples.rows.append(rows)
            examples.shares.append(shares)
            examples.labels.append(label)
            count += 1
        if bad_input.by_reason:
            log.warning(
                "%s: %d unreadable records skipped (%s)",
                setting,
                sum(bad_input.by_reason.values()),
                dict(bad_input.by_reason),
            )
        if not count:
            raise ValueError(
                f"{setting}={getattr(config, setting)}: no document read; "
                "point it to files of JSON lines with a 'text' field"
            )
    if len(set(training.labels)) < 2:
        raise ValueError(
            f"heldout_fraction={config.heldout_fraction} leaves no training document of one set; "
            "lower it or add documents"
        )
    return training, heldout


def train(examples: Examples, config: TrainQualityConfig) -> tuple[np.ndarray, np.ndarray]:
    """SGD on the logistic loss; returns (embeddings, output weights + bias)."""
    rng = np.random.default_rng(config.seed)
    embeddings = rng.uniform(-1 / config.dim, 1 / config.dim, size=(config.buckets, config.dim)).astype(np.float32)
    weights = np.zeros(config.dim, dtype=np.float32)  # fastText starts the output layer at zero
    bias = 0.0
    steps, step = config.epochs * len(examples.labels), 0
    for _ in range(config.epochs):
        for index in rng.permutation(len(examples.labels)):
            rate = config.lr * (1 - step / steps)
            step += 1
            rows, shares = examples.rows[index], examples.shares[index]
            vector = shares @ embeddings[rows]  # the mean of the feature rows
            # d(log loss)/d(logit) = p - y
            gradient = sigmoid(float(vector @ weights) + bias) - examples.labels[index]
            embeddings[rows] -= np.outer(shares * np.float32(rate * gradient), weights)  # before weights change
            weights -= np.float32(rate * gradient) * vector
            bias -= rate * gradient
    return embeddings, np.append(weights, np.float32(bias)).astype(np.float32)


def evaluate(examples: Examples, embeddings: np.ndarray, output: np.ndarray) -> dict[str, Any]:
    """Precision, recall and accuracy at score >= 0.5, and the mean log loss."""
    labels = np.array(examples.labels, dtype=bool)
    logits = np.array(
        [
            float((shares @ embeddings[rows]) @ output[:-1] + output[-1]) if len(rows) else float(output[-1])
            for rows, shares in zip(examples.rows, examples.shares)
        ]
    )
    predicted = logits >= 0
    true_positives = int((predicted & labels).sum())
    loss = np.logaddexp(0, -logits[labels]).sum() + np.logaddexp(0, logits[~labels]).sum()
    return {
        "documents": int(len(labels)),
        "positives": int(labels.sum()),
        "precision": round(true_positives / max(int(predicted.sum()), 1), 4),
        "recall": round(true_positives / max(int(labels.sum()), 1), 4),
        "accuracy": round(float((predicted == labels).mean()) if len(labels) else math.nan, 4),
        "log_loss": round(float(loss) / max(len(labels), 1), 4),
    }


def train_quality(config: TrainQualityConfig) -> dict[str, Any]:
    """The command: read, train, measure, write; returns the model header."""
    validate(config)
    start = time.perf_counter()
    training, heldout = load_examples(config)
    embeddings, output = train(training, config)
    metrics = {"training": evaluate(training, embeddings, output)}
    if heldout.labels:
        metrics["heldout"] = evaluate(heldout, embeddings, output)
    settings = {name: getattr(config, name) for name in ("positives", "negatives", "epochs", "lr", "heldout_fraction")}
    header = save_model(config.output, embeddings, output, config.word_ngrams, config.seed, {**settings, **metrics})
    for name, result in metrics.items():
        print(
            f"{name}: {result['documents']:,} documents ({result['positives']:,} positive): "
            f"precision {result['precision']:.3f}, "
            f"recall {result['recall']:.3f}, accuracy {result['accuracy']:.3f} at score >= 0.5"
        )
    print(
        f"model: {config.output} ({config.buckets:,} x {config.dim} table, sha256 {header['sha256'][:12]}; "
        f"{time.perf_counter() - start:.1f} s)"
    )
    return header


main = hydra_command("train_quality", TrainQualityConfig, train_quality)
