"""Stage 1 of ``tokenize format=chat``, one job per input unit: conversations rendered with
the tokenizer's chat template into samples of ``chat.seq_len + 1`` tokens with their loss
masks (data_pipeline/formats/token_shards.py), appended to the unit's run of each split.

Every sample is whole: with ``chat.packing=pack`` conversations follow each other in a
sample until the next one does not fit, and the rest is padding; with ``pad`` each has its
own. A conversation starts a document (START_BIT), so training keeps attention inside it;
the loss covers its assistant tokens (every token with ``train_on_prompt``), never its first
token, which nothing in the conversation predicts, and never padding. Malformed or
overlong conversations are counted by reason, with file and line (summary.py)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from data_pipeline.formats.token_shards import LOSS_BIT, START_BIT, TokenShardWriter
from data_pipeline.formats.tokenizer_files import TokenizerFiles
from data_pipeline.io.readers import BadInput, BadInputTally, record_id, unit_records
from data_pipeline.io.units import InputUnit
from data_pipeline.tokenize.config import ChatConfig, TokenizeConfig
from data_pipeline.tokenize.encode import id_hash_of, is_val
from data_pipeline.tokenize.output_dir import SPLITS, TRAIN, VAL, TokenizeOutputDir
from data_pipeline.tokenizer.chat_template import ChatTemplateError, load_chat_template, record_messages
from data_pipeline.tokenizer.hf_tokenizer import HFTokenizerFiles


def sample_tokens(chat: ChatConfig) -> int:
    """Tokens a stored sample holds: the seq_len inputs and one more for their targets."""
    return chat.seq_len + 1


class SamplePacker:
    """Conversations (ids, loss bits) into whole samples of one split's run."""

    def __init__(self, writer: TokenShardWriter, length: int, pad_id: int, pack: bool) -> None:
        self.writer = writer
        self.length = length
        self.pad_id = pad_id
        self.pack = pack
        self.used = 0  # tokens of the open sample
        self.samples = 0
        self.padding = 0

    def add(self, ids: list[int], bits: np.ndarray) -> None:
        if self.used and (not self.pack or self.used + len(ids) > self.length):
            self.close_sample()
        self.writer.add_document(ids, bits)
        self.used += len(ids)

    def close_sample(self) -> None:
        """Pad the open sample to its length (a document of its own)."""
        if not self.used:
            return
        missing = self.length - self.used
        if missing:
            bits = np.zeros(missing, dtype=np.uint8)
            bits[0] = START_BIT  # the padding run is a document of its own
            self.writer.add_document(np.full(missing, self.pad_id), bits)
        self.padding += missing
        self.samples += 1
        self.used = 0


def loss_bits(assistant: list[bool], train_on_prompt: bool) -> np.ndarray:
    bits = (
        np.asarray(assistant, dtype=np.uint8) * LOSS_BIT
        if not train_on_prompt
        else np.full(len(assistant), LOSS_BIT, np.uint8)
    )
    bits[0] = START_BIT  # the first token is no target: nothing before it in the conversation
    return bits


def encode_chat_unit(
    unit: InputUnit, config: TokenizeConfig, tokenizer: TokenizerFiles | HFTokenizerFiles
) -> dict[str, Any]:
    """Encode one input unit's conversations into its runs; returns its stats (the unit's marker)."""
    start_cpu = time.process_time()
    chat, layout, special = config.chat, TokenizeOutputDir(config.output_dir), tokenizer.special_tokens
    template = load_chat_template(tokenizer)
    length = sample_tokens(chat)
    id_paths = [key.split(".") for key in config.reader.id_keys]
    bad_input = BadInputTally(config.strict)
    stats: dict[str, Any] = {
        "unit": str(unit),
        "bytes": 0,
        "documents": dict.fromkeys(SPLITS, 0),
        "tokens": dict.fromkeys(SPLITS, 0),
        "smallest_train_hashes": [],
        "chat": {"truncated": 0, "loss_tokens": 0},
    }
    writers = {
        split: TokenShardWriter(
            layout.run_prefix(split, unit.index), special.vocab_size, special.tokenizer_hash, loss_mask=True
        )
        for split in SPLITS
    }
    packers = {split: SamplePacker(writers[split], length, special.pad_id, chat.packing == "pack") for split in SPLITS}
    try:
        for line, record in unit_records(unit, config.reader):
            if isinstance(record, BadInput):
                bad_input.add(record)
                continue
            messages = record_messages(record)
            if isinstance(messages, str):
                bad_input.add(BadInput(unit.input_name, line, "bad_conversation", messages))
                continue
            try:
                encoded = template.encode(messages)
            except ChatTemplateError as error:
                bad_input.add(BadInput(unit.input_name, line, "template_error", str(error)))
                continue
            bits = loss_bits(encoded.assistant, chat.train_on_prompt)
            ids = encoded.ids
            if len(ids) > length:
                if chat.overlong == "drop" or not (bits[:length] & LOSS_BIT).any():
                    bad_input.add(
                        BadInput(
                            unit.input_name,
                            line,
                            "too_long",
                            f"{len(ids)} tokens > chat.seq_len + 1 = {length}"
                            + ("" if chat.overlong == "drop" else "; nothing to train on in its first part"),
                        )
                    )
                    continue
                ids, bits = ids[:length], bits[:length]
                stats["chat"]["truncated"] += 1
            if not (bits & LOSS_BIT).any():
                bad_input.add(
                    BadInput(
                        unit.input_name,
                        line,
                        "no_assistant_turn",
                        "nothing to train on (set chat.train_on_prompt=true to train on it all)",
                    )
                )
                continue
            split = (
                VAL
                if is_val(id_hash_of(record_id(record, id_paths, unit.input_name, line)), config.val_fraction)
                else TRAIN
            )
            packers[split].add(ids, bits)
            stats["documents"][split] += 1
            stats["chat"]["loss_tokens"] += int((bits & LOSS_BIT).astype(bool).sum())
            stats["bytes"] += sum(len(message["content"].encode("utf-8")) for message in messages)
        for split in SPLITS:
            packers[split].close_sample()
            stats["tokens"][split] = writers[split].num_tokens
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    for writer in writers.values():
        writer.close()
    stats["chat"].update(
        samples=sum(packer.samples for packer in packers.values()),
        padding_tokens=sum(p.padding for p in packers.values()),
    )
    stats["bad_input"] = bad_input.stats()
    stats["cpu_seconds"] = time.process_time() - start_cpu
    return stats
