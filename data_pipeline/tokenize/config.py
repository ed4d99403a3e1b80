"""The options of ``python -m data_pipeline.tokenize`` (configs/tokenize.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from data_pipeline.decontaminate.ngrams import DEFAULT_NGRAM
from data_pipeline.executors.config import ExecutorConfig
from data_pipeline.io.config import ReaderConfig

# 2^28 tokens: 512 MiB of uint16 (vocabularies up to 65,536) or 1 GiB of uint32 per shard.
# Large enough that a 1 T-token corpus is ~3,700 shards (few files, few opens), small enough
# to copy, checksum or re-make one shard in seconds, and ~1 s of a training run's reading.
DEFAULT_TOKENS_PER_SHARD = 2**28


FORMATS = ("text", "chat")
PACKINGS = ("pack", "pad")
OVERLONG = ("truncate", "drop")


@dataclass
class ChatConfig:
    """format=chat (docs/sft.md): conversations to samples of ``seq_len + 1`` tokens with a loss mask."""

    # train.seq_len of the fine-tuning run that reads the shards (each sample stores its
    # seq_len inputs and the one more token its targets need).
    seq_len: int = 2048
    # pack: whole conversations share a sample, in order, attention kept inside each (the rest
    # of a sample that the next conversation does not fit is padding); pad: one per sample.
    packing: str = "pack"
    # A conversation longer than a sample: truncate (keep its start) or drop; counted either way.
    overlong: str = "truncate"
    # Train on every token of a conversation, not only the assistant's turns.
    train_on_prompt: bool = False


@dataclass
class TokenizeConfig:
    input: str = MISSING  # files, a folder (its top level: a curation output_dir), a glob, or hf:<dataset>
    # A tokenizer directory (train_tokenizer's output_dir) or its tokenizer.model, or a
    # Hugging Face tokenizer directory (tokenizer.json; docs/hf.md).
    tokenizer: str = MISSING
    output_dir: str = MISSING
    # text: documents ({"text"}); chat: conversations ({"messages": [{"role", "content"}, ...]}
    # or {"prompt", "completion"}) rendered with the tokenizer's chat template (docs/sft.md).
    format: str = "text"
    chat: ChatConfig = field(default_factory=ChatConfig)
    # Worker processes on this machine (executor=local); 0 = all cores.
    workers: int = 0
    # Work units: an uncompressed JSON-lines file is cut into byte ranges and a parquet file
    # into runs of row groups of about this size; compressed files are one unit each.
    unit_size_mb: float = 256
    # Every shard of a split holds exactly this many tokens except the split's last one;
    # a document may run on from one shard into the next.
    tokens_per_shard: int = DEFAULT_TOKENS_PER_SHARD
    # Share of documents (by id hash) that go to the val split; a corpus of at least 10
    # documents whose hashes send none gives val its documents of smallest hash, one per 10
    # documents, at most 10.
    val_fraction: float = 0.005
    # Every document ends with EOS; also start each with BOS.
    add_bos: bool = False
    # A Hugging Face tokenizer only: append a mask token and num_sentinels sentinels to its
    # vocabulary (for objective=mlm / span; docs/hf.md). The shards get the grown tokenizer.
    add_special_tokens: bool = False
    num_sentinels: int = 100
    # Words per gram of the train split's n-gram fingerprint (train.ngrams.u64, which evaluation
    # checks its tasks against: docs/evaluation.md, "Contamination"); null: no fingerprint.
    fingerprint_ngram: Optional[int] = DEFAULT_NGRAM
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    strict: bool = False  # the first bad input record fails the run
    progress: bool = True


# Settings that change how the run goes, not what it writes: a rerun may change them.
RUNTIME_KEYS = ("workers", "executor", "strict", "progress")
