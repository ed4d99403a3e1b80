"""Where a run's training data and tokenizer are, checked before anything is built."""

from __future__ import annotations

from pathlib import Path

from data_pipeline.formats.special_tokens import META_FILENAME
from data_pipeline.formats.token_shards import split_identity
from pretrain.config import DataConfig
from pretrain.data.megatron import MegatronTokens, is_megatron_prefix


def data_sources(data: DataConfig) -> tuple[list[str], list[float]]:
    """The paths of the training sources and their blend weights."""
    if data.path and data.sources:
        raise ValueError("give either data.path or data.sources, not both")
    if data.path:
        paths, weights = [data.path], [1.0]
    elif data.sources:
        paths, weights = [s.path for s in data.sources], [s.weight for s in data.sources]
    else:
        raise ValueError("no training data: set data.path=<dir of token shards> (the output of data_pipeline.tokenize)")
    for path in paths:
        if not Path(path).is_dir() and not is_megatron_prefix(path):
            raise FileNotFoundError(
                f"data.path={path}: no such directory of token shards (the output of data_pipeline.tokenize), "
                "nor the prefix of a Megatron .bin/.idx pair"
            )
    return paths, weights


def data_identity(paths: list[str], weights: list[float], split: str) -> list[dict]:
    """What each training source is (its split's ``split_identity``; a Megatron pair, which
    has no splits: its counts), with its weight and, for messages only, its path. A
    checkpoint records it; resume compares everything but the paths."""
    identities = []
    for path, weight in zip(paths, weights):
        if is_megatron_prefix(path):
            pair = MegatronTokens(path)
            what = {"megatron": True, "num_tokens": pair.num_tokens, "num_sequences": pair.num_sequences}
        else:
            what = split_identity(path, split)
        identities.append({"path": str(path), "weight": weight, **what})
    return identities


def tokenizer_dir(data: DataConfig, source_paths: list[str]) -> Path:
    directory = Path(data.tokenizer) if data.tokenizer else Path(source_paths[0])
    if not (directory / META_FILENAME).exists():
        raise FileNotFoundError(
            f"{directory / META_FILENAME}: tokenizer metadata not found; set data.tokenizer=<tokenizer dir> "
            "(the output of data_pipeline.train_tokenizer)"
        )
    return directory
