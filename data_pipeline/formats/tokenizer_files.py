"""A trained tokenizer on disk: ``tokenizer.model`` with its ``tokenizer_meta.json``."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

from data_pipeline.formats.special_tokens import META_FILENAME, SpecialTokens

MODEL_FILENAME = "tokenizer.model"
# Everything a tokenizer directory may hold: the metadata, the SentencePiece model and the
# Hugging Face files (train_tokenizer's hf_export).
# What transformers' AutoTokenizer needs, a subset of them.
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
TOKENIZER_FILES = (META_FILENAME, MODEL_FILENAME, *HF_TOKENIZER_FILES)


def copy_tokenizer_files(source: Path, target: Path, names: tuple[str, ...] = TOKENIZER_FILES) -> None:
    """Copy those of a tokenizer directory's files that exist, so that the next step finds them."""
    target.mkdir(parents=True, exist_ok=True)
    if source.resolve() == target.resolve():
        return
    for name in names:
        if (source / name).exists():
            shutil.copyfile(source / name, target / name)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# What of the trainer's settings the model reads when it encodes; the rest (input paths,
# thread count, sample size ...) records how it was trained, not what it does.
ENCODING_TRAINER_FIELDS = (
    "model_type",
    "byte_fallback",
    "treat_whitespace_as_suffix",
    "unk_surface",
    "unk_id",
    "bos_id",
    "eos_id",
    "pad_id",
    "unk_piece",
    "bos_piece",
    "eos_piece",
    "pad_piece",
)


def tokenizer_identity(model_path: Path) -> str:
    """sha256 of what the SentencePiece model does: its pieces with scores and types, the
    normalizer and denormalizer specs and the encoding settings with the special ids. Unlike
    a hash of the file it is the same for the same tokenizer trained in another folder."""
    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(model_path.read_bytes())
    behaviour = sentencepiece_model_pb2.ModelProto()
    behaviour.pieces.extend(model.pieces)
    behaviour.normalizer_spec.CopyFrom(model.normalizer_spec)
    behaviour.denormalizer_spec.CopyFrom(model.denormalizer_spec)
    for name in ENCODING_TRAINER_FIELDS:
        setattr(behaviour.trainer_spec, name, getattr(model.trainer_spec, name))
    return hashlib.sha256(behaviour.SerializeToString(deterministic=True)).hexdigest()


@dataclass(frozen=True)
class TokenizerFiles:
    model_path: Path
    special_tokens: SpecialTokens

    @classmethod
    def load(cls, path: str | Path) -> TokenizerFiles:
        """From a tokenizer directory or its ``tokenizer.model``; the metadata must match the model."""
        path = Path(path).expanduser()
        model_path = path / MODEL_FILENAME if path.is_dir() else path
        if not model_path.is_file():
            raise FileNotFoundError(
                f"tokenizer={path}: {model_path} not found; point tokenizer to the output_dir of "
                "`python -m data_pipeline.train_tokenizer`"
            )
        special_tokens = SpecialTokens.load(model_path.parent)
        actual_hash = tokenizer_identity(model_path)
        if special_tokens.tokenizer_hash != actual_hash:
            raise ValueError(
                f"{model_path.parent}: tokenizer_meta.json belongs to tokenizer {special_tokens.tokenizer_hash[:12]}, "
                f"but {model_path.name} is {actual_hash[:12]}; keep the two files of one training run together"
            )
        return cls(model_path, special_tokens)

    def processor(self) -> spm.SentencePieceProcessor:
        """The SentencePiece model, checked to agree with the metadata on BOS/EOS (which encode adds)."""
        processor = spm.SentencePieceProcessor(model_file=str(self.model_path))
        special = self.special_tokens
        if (processor.bos_id(), processor.eos_id(), processor.get_piece_size()) != (
            special.bos_id,
            special.eos_id,
            special.vocab_size,
        ):
            raise ValueError(
                f"{self.model_path}: bos/eos ids or vocabulary size disagree with tokenizer_meta.json; "
                "re-train the tokenizer with `python -m data_pipeline.train_tokenizer`"
            )
        return processor
