"""Open the token shards of a tokenize output directory for training, refusing any that
were made with another tokenizer than the one training uses."""

from __future__ import annotations

from pathlib import Path

from data_pipeline.formats.special_tokens import SpecialTokens
from data_pipeline.formats.token_shards import ShardError, TokenShard, find_shards
from data_pipeline.tokenizer.hf_tokenizer import load_tokenizer_files


def open_token_shards(token_dir: str | Path, tokenizer: str | Path, split: str = "train") -> list[TokenShard]:
    """The completed shards of ``split`` in ``token_dir`` (tokenize's output_dir), each checked
    to come from ``tokenizer`` (a tokenizer directory or its tokenizer.model)."""
    expected_hash = load_tokenizer_files(tokenizer).special_tokens.tokenizer_hash
    recorded_hash = SpecialTokens.load(token_dir).tokenizer_hash
    if recorded_hash != expected_hash:
        raise ShardError(
            f"{token_dir}: tokenized with tokenizer {recorded_hash[:12]}, but training uses {tokenizer} "
            f"({expected_hash[:12]}); re-tokenize with it or point to the tokenizer the shards were made with"
        )
    prefixes = find_shards(token_dir, split)
    if not prefixes:
        raise ShardError(f"{token_dir}: no completed {split} shards; run `python -m data_pipeline.tokenize` first")
    return [TokenShard(prefix, expected_tokenizer_hash=expected_hash) for prefix in prefixes]
