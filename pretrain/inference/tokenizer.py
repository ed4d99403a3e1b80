"""The tokenizer a run was trained with, as text ↔ ids for inference: our SentencePiece model,
or a Hugging Face ``tokenizer.json`` (through ``data_pipeline.tokenizer.hf_tokenizer.HFProcessor``)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import sentencepiece as spm

from data_pipeline.formats.special_tokens import SpecialTokens
from data_pipeline.tokenizer.chat_template import ChatTemplate, load_chat_template
from data_pipeline.tokenizer.hf_tokenizer import HFProcessor, load_tokenizer_files
from pretrain.choices import Choice

WORD_BOUNDARY = "\u2581"  # SentencePiece's visible space


class StartToken(Choice):
    """What goes before a prompt. ``auto``: for a tokenizer of ours ``eos`` (in packed
    training a document follows the previous one's EOS, so EOS shows the model a document
    start); for a Hugging Face tokenizer (an imported model) what that tokenizer puts before
    a text itself (BOS or nothing: its tokenizer.json post-processor), as transformers does.
    ``bos`` suits shards tokenized with add_bos=true only if they also lack the EOS before it;
    ``none`` adds nothing."""

    auto = "auto"
    eos = "eos"
    bos = "bos"
    none = "none"


class TextTokenizer:
    def __init__(
        self, processor: spm.SentencePieceProcessor | HFProcessor, special: SpecialTokens, directory: Path
    ) -> None:
        self.processor = processor
        self.special = special
        self.directory = directory

    @classmethod
    def load(cls, directory: str | Path) -> TextTokenizer:
        files = load_tokenizer_files(directory)
        return cls(files.processor(), files.special_tokens, files.model_path.parent)

    @property
    def vocab_size(self) -> int:
        return self.special.vocab_size

    def encode(self, text: str) -> list[int]:
        return self.processor.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.processor.encode(list(texts))

    def decode(self, ids: Sequence[int]) -> str:
        return self.processor.decode(list(ids))

    def start_ids(self, start: StartToken) -> list[int]:
        if start is StartToken.auto:
            return self.processor.start_ids() if isinstance(self.processor, HFProcessor) else [self.special.eos_id]
        return {StartToken.eos: [self.special.eos_id], StartToken.bos: [self.special.bos_id], StartToken.none: []}[
            start
        ]

    def chat_template(self) -> ChatTemplate:
        """The tokenizer's chat template (a Hugging Face tokenizer's own, else our default)."""
        return load_chat_template(load_tokenizer_files(self.directory))

    def token_bytes(self) -> np.ndarray:
        """UTF-8 bytes of text each id stands for (0 for control tokens), for bits per byte."""
        processor = self.processor
        if isinstance(processor, HFProcessor):
            # Bytes per piece are not exposed by every tokenizers model: perplexity only, and
            # bits per byte reads nan.
            return np.zeros(self.vocab_size, dtype=np.int64)
        lengths = np.zeros(processor.get_piece_size(), dtype=np.int64)
        for index in range(len(lengths)):
            if processor.is_byte(index):
                lengths[index] = 1
            elif not (processor.is_control(index) or processor.is_unknown(index) or processor.is_unused(index)):
                lengths[index] = len(processor.id_to_piece(index).replace(WORD_BOUNDARY, " ").encode("utf-8"))
        return lengths
