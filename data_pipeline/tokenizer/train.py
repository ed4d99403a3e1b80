"""Train a SentencePiece BPE tokenizer on curated JSONL shards (the command
``python -m data_pipeline.train_tokenizer input=<dir|glob> output_dir=<dir> vocab_size=N``).

Writes ``tokenizer.model``, ``tokenizer_meta.json`` (the special token ids the objectives
read) and, when transformers is installed, the files ``AutoTokenizer`` loads offline.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import sentencepiece as spm
from omegaconf import MISSING

from data_pipeline.command import hydra_command
from data_pipeline.formats.special_tokens import CHAT_TOKENS, SpecialTokens
from data_pipeline.formats.tokenizer_files import MODEL_FILENAME, tokenizer_identity
from data_pipeline.io.config import ReaderConfig
from data_pipeline.io.readers import BadInputTally
from data_pipeline.tokenizer.hf_export import export_transformers_tokenizer
from data_pipeline.tokenizer.sample import SampleSettings, TrainingSample, input_units

log = logging.getLogger(__name__)

UNK, BOS, EOS, PAD, MASK = "<unk>", "<s>", "</s>", "<pad>", "<mask>"
BYTE_PIECES = 256


def sentinel_piece(index: int) -> str:
    return f"<extra_id_{index}>"


@dataclass
class TokenizerConfig:
    input: str = MISSING
    output_dir: str = MISSING
    vocab_size: int = 32000
    # Share of characters the vocabulary must cover; the rarest rest is spelt with byte pieces.
    character_coverage: float = 0.9995
    # How many training texts (documents, long ones cut in pieces) the sample keeps, chosen
    # by a seeded hash of the document id; peak memory grows with the bytes of this sample
    # (see docs/tokenizer.md).
    input_sentence_size: int = 100_000
    # Longest training text in bytes; longer documents are cut at line ends.
    max_sentence_length: int = 16384
    # How much of a large corpus is read for the sample: input units, chosen by a seeded hash
    # of their names, until their bytes reach this many times input_sentence_size ×
    # max_sentence_length (so at least this many times the texts the sample keeps); null reads
    # every unit. See docs/tokenizer.md.
    sample_units_factor: Optional[float] = 4.0
    # Processes reading the sample's units; 0 = all cores. The sample is the same for any number.
    workers: int = 0
    num_sentinels: int = 100
    # Threads for training; 0 = all cores. The vocabulary is the same for any number.
    num_threads: int = 0
    # Chooses the sample (with the document ids): the same input and seed give the same vocabulary.
    seed: int = 0
    # Also write the Hugging Face transformers files (needs transformers installed).
    hf_export: bool = True
    strict: bool = False
    # How records are read, as in curation: reader.text_key, reader.id_keys and, for an hf:
    # input, reader.hf.name / split / data_files.
    reader: ReaderConfig = field(default_factory=ReaderConfig)


def sentencepiece_options(config: TokenizerConfig) -> dict:
    """Options for a lossless LLM tokenizer whose ids transformers reproduces exactly."""
    return dict(
        model_type="bpe",
        vocab_size=config.vocab_size,
        character_coverage=config.character_coverage,
        # The sample is chosen and ordered by TrainingSample; SentencePiece's own reservoir
        # sampler and shuffle draw from a process-wide generator, so both stay off.
        input_sentence_size=0,
        shuffle_input_sentence=False,
        max_sentence_length=config.max_sentence_length,
        num_threads=config.num_threads or os.cpu_count() or 1,
        byte_fallback=True,
        split_digits=True,
        # No normalization and no dummy prefix: decode(encode(text)) == text, whitespace included.
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        unk_piece=UNK,
        bos_piece=BOS,
        eos_piece=EOS,
        pad_piece=PAD,
        # Control symbols, not user-defined ones: a literal "<mask>" in text is then spelt
        # out in plain pieces, by SentencePiece and transformers alike.
        # The chat tokens of the default chat template come last, so the ids before them stay as they were.
        control_symbols=[MASK, *(sentinel_piece(i) for i in range(config.num_sentinels)), *CHAT_TOKENS.values()],
        minloglevel=2,  # errors only: its warnings are about the unused .vocab listing
    )


def check_config(config: TokenizerConfig) -> None:
    minimum = 4 + 1 + config.num_sentinels + len(CHAT_TOKENS) + BYTE_PIECES + 1
    if config.vocab_size < minimum:
        raise ValueError(
            f"vocab_size={config.vocab_size} is too small: 4 special tokens, <mask>, {config.num_sentinels} "
            f"sentinels, {len(CHAT_TOKENS)} chat tokens and {BYTE_PIECES} byte pieces need {minimum - 1}; "
            f"set vocab_size >= {minimum}"
        )
    if config.input_sentence_size < 1:
        raise ValueError(f"input_sentence_size={config.input_sentence_size}: the sample needs texts; set it >= 1")
    if config.sample_units_factor is not None and config.sample_units_factor <= 0:
        raise ValueError(
            f"sample_units_factor={config.sample_units_factor}: set it > 0 (4 reads 4× the sample), "
            "or null to read every input unit"
        )
    if config.workers < 0:
        raise ValueError(f"workers={config.workers}: set it >= 1, or 0 for all cores")


def vocabulary_too_large(err: RuntimeError, vocab_size: int) -> ValueError | None:
    """SentencePiece's "Vocabulary size too high (N). Please set it to a value <= M." as a
    message that names the setting and the fix."""
    found = re.search(r"Vocabulary size too high.*<= (\d+)", str(err))
    if found is None:
        return None
    return ValueError(
        f"vocab_size={vocab_size}: this corpus has text for at most {found.group(1)} pieces; "
        f"set vocab_size <= {found.group(1)} or train on more text"
    )


def report_bad_input(bad_input: BadInputTally) -> None:
    stats = bad_input.stats()
    if stats["count"]:
        listed = "\n  ".join(
            f"{event['file']}:{event['line']}: {event['reason']}: {event['detail']}" for event in stats["events"]
        )
        log.warning(
            "skipped %d bad records (strict=true fails on them instead); the first ones:\n  %s", stats["count"], listed
        )


def read_special_tokens(model_path: Path, num_sentinels: int) -> SpecialTokens:
    processor = spm.SentencePieceProcessor(model_file=str(model_path))
    return SpecialTokens(
        vocab_size=processor.get_piece_size(),
        pad_id=processor.pad_id(),
        bos_id=processor.bos_id(),
        eos_id=processor.eos_id(),
        unk_id=processor.unk_id(),
        mask_id=processor.piece_to_id(MASK),
        sentinel_ids=tuple(processor.piece_to_id(sentinel_piece(i)) for i in range(num_sentinels)),
        tokenizer_hash=tokenizer_identity(model_path),
    )


def train_tokenizer(config: TokenizerConfig) -> SpecialTokens:
    check_config(config)
    units = input_units(config.input, config.reader.hf)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    settings = SampleSettings(
        config.input_sentence_size, config.max_sentence_length, config.seed, config.strict, config.reader
    )
    stream = TrainingSample(units, settings, config.workers or os.cpu_count() or 1, config.sample_units_factor)
    log.info(
        "training a %d-piece BPE tokenizer on a sample of up to %d texts", config.vocab_size, config.input_sentence_size
    )
    start = time.perf_counter()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(stream),
            model_prefix=str(output_dir / Path(MODEL_FILENAME).stem),
            **sentencepiece_options(config),
        )
    except RuntimeError as err:
        if stream.error:
            raise stream.error from None
        too_large = vocabulary_too_large(err, config.vocab_size)
        if too_large is None:
            raise
        raise too_large from err
    report_bad_input(stream.bad_input)
    model_path = output_dir / MODEL_FILENAME
    (output_dir / "tokenizer.vocab").unlink(missing_ok=True)  # a listing nothing reads
    special_tokens = read_special_tokens(model_path, config.num_sentinels)
    special_tokens.save(output_dir)
    if config.hf_export:
        export_transformers_tokenizer(output_dir, special_tokens)
    log.info(
        "read %d documents (%.1f MB, %d training texts) from %d of %d input units; trained in %.1f s; wrote %s",
        stream.documents,
        stream.num_bytes / 1e6,
        stream.texts,
        stream.units_read,
        len(units),
        time.perf_counter() - start,
        output_dir,
    )
    return special_tokens


main = hydra_command("tokenizer", TokenizerConfig, train_tokenizer)

if __name__ == "__main__":
    main()
