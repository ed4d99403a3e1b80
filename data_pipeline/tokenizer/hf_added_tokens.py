"""``data_pipeline.tokenize add_special_tokens=true``: a Hugging Face tokenizer grown by a
mask token and span-corruption sentinels, so that MLM and span corruption can train on it.

The new tokens are appended after the tokenizer's vocabulary (ids ``vocab_size``,
``vocab_size + 1``, …) as special added tokens of ``tokenizer.json``, and named in
``tokenizer_config.json`` (``mask_token``, ``additional_special_tokens``): transformers'
``AutoTokenizer`` then gives the same ids, and ``HFTokenizerFiles.load`` finds them. Training
with ``init_from`` grows the checkpoint's embedding (and head) to cover them (docs/hf.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from data_pipeline.tokenizer.hf_tokenizer import TOKENIZER_JSON, copy_hf_tokenizer
from data_pipeline.tokenizer.train import MASK, sentinel_piece

TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP = "tokenizer_config.json", "special_tokens_map.json"


def write_grown_tokenizer(source: Path, target: Path, num_sentinels: int) -> None:
    """The tokenizer in ``source`` plus ``<mask>`` and ``num_sentinels`` sentinels, into ``target``.
    Tokens the vocabulary already holds keep their ids (tokenizers only appends new ones)."""
    from tokenizers import AddedToken, Tokenizer

    if num_sentinels < 0:
        raise ValueError(f"num_sentinels={num_sentinels}: set 0 or more sentinel tokens to add")
    tokenizer = Tokenizer.from_file(str(source / TOKENIZER_JSON))
    sentinels = [sentinel_piece(index) for index in range(num_sentinels)]
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in (MASK, *sentinels)])
    target.mkdir(parents=True, exist_ok=True)
    copy_hf_tokenizer(source, target)
    tokenizer.save(str(target / TOKENIZER_JSON))
    config_path = target / TOKENIZER_CONFIG
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    known = [token for token in config.get("additional_special_tokens", []) if token not in sentinels]
    config.update(mask_token=MASK, additional_special_tokens=known + sentinels)
    # transformers' added_tokens_decoder would repeat tokenizer.json's list: that one is the truth.
    config.pop("added_tokens_decoder", None)
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    special_map = target / SPECIAL_TOKENS_MAP
    if special_map.is_file():  # it would override tokenizer_config.json's mask_token
        tokens = json.loads(special_map.read_text())
        tokens.update(mask_token=MASK, additional_special_tokens=config["additional_special_tokens"])
        special_map.write_text(json.dumps(tokens, indent=2) + "\n")
