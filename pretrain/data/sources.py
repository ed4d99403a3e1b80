"""Where a run's training data and tokenizer are, checked before anything is built."""

from __future__ import annotations

from pathlib import Path

from data_pipeline.formats.special_tokens import META_FILENAME
from pretrain.config import DataConfig
from pretrain.data.megatron import is_megatron_prefix


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


def tokenizer_dir(data: DataConfig, source_paths: list[str]) -> Path:
    directory = Path(data.tokenizer) if data.tokenizer else Path(source_paths[0])
    if not (directory / META_FILENAME).exists():
        raise FileNotFoundError(
            f"{directory / META_FILENAME}: tokenizer metadata not found; set data.tokenizer=<tokenizer dir> "
            "(the output of data_pipeline.train_tokenizer)"
        )
    return directory
