"""The special token ids a tokenizer provides to the objectives.

A tokenizer directory holds ``tokenizer.model`` and ``tokenizer_meta.json``; the latter is
the only thing the training side needs to know about special tokens. Objectives never
hard-code ids: they read them from a :class:`SpecialTokens`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

META_FILENAME = "tokenizer_meta.json"
# The control tokens of the default chat template (data_pipeline/tokenizer/chat_template.py),
# which train_tokenizer reserves after the sentinels: by role, and the end of a turn.
CHAT_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>", "end": "<|end|>"}


@dataclass(frozen=True)
class SpecialTokens:
    vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int
    # None where the tokenizer has none (byte-level BPE has no unknown token; only MLM
    # needs a mask token). A Hugging Face tokenizer without BOS or pad uses EOS for them.
    unk_id: Optional[int]
    mask_id: Optional[int]
    sentinel_ids: tuple[int, ...] = field(default_factory=tuple)
    # Identifies the tokenizer model file (sha256 of its bytes); "" when synthetic.
    tokenizer_hash: str = ""

    def __post_init__(self) -> None:
        own = [i for i in (self.bos_id, self.pad_id) if i != self.eos_id]
        ids = [i for i in (*own, self.eos_id, self.unk_id, self.mask_id, *self.sentinel_ids) if i is not None]
        if len(set(ids)) != len(ids):
            raise ValueError(f"special token ids must be distinct, got {ids}")
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"special token ids {bad} fall outside the vocabulary [0, {self.vocab_size})")

    @property
    def all_ids(self) -> tuple[int, ...]:
        """The distinct special ids the tokenizer has."""
        ids = (self.pad_id, self.bos_id, self.eos_id, self.unk_id, self.mask_id, *self.sentinel_ids)
        return tuple(dict.fromkeys(i for i in ids if i is not None))

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / META_FILENAME
        data = asdict(self)
        data["sentinel_ids"] = list(self.sentinel_ids)
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> SpecialTokens:
        """Load from a tokenizer directory or from the metadata file itself."""
        path = Path(path)
        if path.is_dir():
            path = path / META_FILENAME
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{path}: tokenizer metadata not found; train a tokenizer with "
                "`python -m data_pipeline.train_tokenizer` or point to its output directory"
            ) from None
        data["sentinel_ids"] = tuple(data.get("sentinel_ids", ()))
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)} in tokenizer metadata")
        return cls(**data)

    @classmethod
    def synthetic(cls, vocab_size: int, num_sentinels: int = 100) -> SpecialTokens:
        """Ids laid out like our SentencePiece tokenizer (specials first), for tests and
        for training on token shards that came without a tokenizer."""
        first_sentinel = 5
        if vocab_size <= first_sentinel + num_sentinels:
            raise ValueError(f"vocab_size {vocab_size} leaves no room for {num_sentinels} sentinels")
        return cls(
            vocab_size=vocab_size,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=3,
            mask_id=4,
            sentinel_ids=tuple(range(first_sentinel, first_sentinel + num_sentinels)),
        )
