"""A Hugging Face tokenizer directory (``tokenizer.json``, read by the ``tokenizers``
library) as a tokenizer of this pipeline, so that a corpus is tokenized with the model's own
tokenizer before ``train init_from=DIR``.

The special ids come from ``tokenizer_config.json`` / ``special_tokens_map.json``; a
tokenizer without BOS or pad uses EOS for them (documents end with EOS either way). Causal-LM
tokenizers have no mask token or sentinels (``<extra_id_N>``): CLM only, MLM and span
corruption refuse, unless tokenize's ``add_special_tokens=true`` appended them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from data_pipeline.formats.special_tokens import META_FILENAME, SpecialTokens
from data_pipeline.formats.tokenizer_files import (
    HF_TOKENIZER_FILES,
    MODEL_FILENAME,
    TokenizerFiles,
    copy_tokenizer_files,
    file_sha256,
)
from data_pipeline.tokenizer.train import sentinel_piece

TOKENIZER_JSON = "tokenizer.json"


def is_hf_tokenizer(directory: Path) -> bool:
    """A Hugging Face tokenizer directory, not one of our SentencePiece ones (those hold
    ``tokenizer.model`` with our metadata, and an export's copy of ``tokenizer.json``)."""
    ours = (directory / MODEL_FILENAME).is_file() and (directory / META_FILENAME).is_file()
    return directory.is_dir() and (directory / TOKENIZER_JSON).is_file() and not ours


class HFProcessor:
    """The part of SentencePiece's processor interface the pipeline uses, over ``tokenizers``."""

    def __init__(self, tokenizer: Any, special: SpecialTokens) -> None:
        self.tokenizer = tokenizer
        self.special = special

    def encode(
        self,
        input: str | Sequence[str],
        add_bos: bool = False,
        add_eos: bool = False,
        num_threads: Optional[int] = None,
        return_type: Optional[str] = None,
    ) -> Any:
        """Ids of a text, or of each of a list of texts; the tokenizer's own post-processing
        (a BOS it may add) is off, BOS and EOS are added as asked, as for SentencePiece."""
        texts = [input] if isinstance(input, str) else list(input)
        rows = [
            [self.special.bos_id] * add_bos + encoding.ids + [self.special.eos_id] * add_eos
            for encoding in self.tokenizer.encode_batch(texts, add_special_tokens=False)
        ]
        if return_type == "numpy":
            rows = [np.asarray(row, dtype=np.int64) for row in rows]
        return rows[0] if isinstance(input, str) else rows

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def start_ids(self) -> list[int]:
        return prompt_start_ids(self.tokenizer)


def tokenizer_settings(directory: Path) -> dict[str, Any]:
    """``tokenizer_config.json`` with ``special_tokens_map.json`` over it (either may be missing)."""
    settings: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (directory / name).is_file():
            settings.update(json.loads((directory / name).read_text()))
    return settings


def special_token_strings(directory: Path) -> dict[str, Optional[str]]:
    """{"bos_token": "<s>" or None, ...} from the tokenizer's config files."""
    settings = tokenizer_settings(directory)
    strings: dict[str, Optional[str]] = {}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token", "mask_token"):
        token = settings.get(key)
        strings[key] = token.get("content") if isinstance(token, dict) else token
    return strings


def _token_ids(directory: Path, tokenizer: Any) -> dict[str, Optional[int]]:
    """{"bos_token": id or None, ...} from the tokenizer's config files."""
    ids: dict[str, Optional[int]] = {}
    for key, token in special_token_strings(directory).items():
        ids[key] = None if token is None else tokenizer.token_to_id(token)
        if token is not None and ids[key] is None:
            raise ValueError(f"{directory}: {key}={token!r} is not in {TOKENIZER_JSON}'s vocabulary")
    return ids


def prompt_start_ids(tokenizer: Any) -> list[int]:
    """What the tokenizer itself puts before a text (BOS, or nothing): what ``tokenizer.json``'s
    post-processor adds in front, as transformers' ``tokenizer(text)`` does (transformers 5
    goes by the post-processor, whatever ``add_bos_token`` tokenizer_config.json sets)."""
    bare = tokenizer.encode("x", add_special_tokens=False).ids
    full = tokenizer.encode("x", add_special_tokens=True).ids
    return next(
        (full[:start] for start in range(len(full) - len(bare) + 1) if full[start : start + len(bare)] == bare), []
    )


def _sentinel_ids(tokenizer: Any) -> tuple[int, ...]:
    """The ids of ``<extra_id_0>``, ``<extra_id_1>``, … as far as the vocabulary has them
    (those ``add_special_tokens=true`` appends; see data_pipeline/tokenizer/hf_added_tokens.py)."""
    ids: list[int] = []
    while (token_id := tokenizer.token_to_id(sentinel_piece(len(ids)))) is not None:
        ids.append(token_id)
    return tuple(ids)


@dataclass(frozen=True)
class HFTokenizerFiles:
    """Like :class:`TokenizerFiles`, for a Hugging Face tokenizer directory."""

    model_path: Path  # tokenizer.json
    special_tokens: SpecialTokens

    @classmethod
    def load(cls, directory: Path) -> HFTokenizerFiles:
        from tokenizers import Tokenizer

        model_path = directory / TOKENIZER_JSON
        tokenizer = Tokenizer.from_file(str(model_path))
        ids = _token_ids(directory, tokenizer)
        if ids["eos_token"] is None:
            raise ValueError(
                f"{directory}: tokenizer_config.json sets no eos_token; every document ends with EOS, so set one"
            )
        eos = ids["eos_token"]
        special = SpecialTokens(
            vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
            pad_id=eos if ids["pad_token"] is None else ids["pad_token"],
            bos_id=eos if ids["bos_token"] is None else ids["bos_token"],
            eos_id=eos,
            unk_id=ids["unk_token"],
            mask_id=ids["mask_token"],
            sentinel_ids=_sentinel_ids(tokenizer),
            tokenizer_hash=file_sha256(model_path),
        )
        return cls(model_path, special)

    def processor(self) -> HFProcessor:
        from tokenizers import Tokenizer

        return HFProcessor(Tokenizer.from_file(str(self.model_path)), self.special_tokens)


def copy_hf_tokenizer(source: Path, target: Path) -> None:
    """The files transformers' AutoTokenizer needs, from one directory to another."""
    copy_tokenizer_files(source, target, HF_TOKENIZER_FILES)


def load_tokenizer_files(path: str | Path) -> TokenizerFiles | HFTokenizerFiles:
    """Our SentencePiece tokenizer (a directory or its tokenizer.model), or a Hugging Face
    tokenizer directory."""
    path = Path(path).expanduser()
    return HFTokenizerFiles.load(path) if is_hf_tokenizer(path) else TokenizerFiles.load(path)
