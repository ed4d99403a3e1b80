"""Tokenize curated text into fixed-size packed token shards, as work units.

    python -m data_pipeline.tokenize input=<dir|glob|hf:name> tokenizer=<path> output_dir=<dir>
        [workers=N] [executor=local|slurm|ray]

Two stages (three with the fingerprint) run on the executor (the same ones, and settings, as curation's):
  encode  per input unit (io/units.py): documents -> a token run per split (encode.py)
  pack    per output shard: exactly tokens_per_shard tokens copied out of the runs (pack.py)
  fingerprint  (beside pack) per range of the hash space: the train split's n-gram fingerprint
          merged from the encode units' runs (decontaminate/fingerprint.py; fingerprint_ngram)
then every split gets its index (<split>.shards.json), the runs are removed and the summary
is printed and kept in summary.json. A rerun redoes only the units without a marker.
``<output_dir>`` also gets a copy of the tokenizer (``tokenizer.model``, ``tokenizer_meta.json``,
the Hugging Face files), so that training with ``data.path=<output_dir>`` alone checks the
shards against it and keeps it for evaluation, generation and export.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from data_pipeline.command import hydra_command
from data_pipeline.decontaminate.fingerprint import (
    FINGERPRINT_FILE,
    FINGERPRINT_META,
    merge_range,
    plan_ranges,
    publish,
)
from data_pipeline.executors.build import build_executor
from data_pipeline.executors.config import EXECUTOR_KINDS
from data_pipeline.executors.stage import Stage, unit_stats
from data_pipeline.executors.tasks import Task
from data_pipeline.formats.token_shards import SplitIndex, find_shards
from data_pipeline.formats.tokenizer_files import TokenizerFiles, copy_tokenizer_files
from data_pipeline.io.readers import resolve_corpus_inputs
from data_pipeline.io.units import InputUnit, split_into_units
from data_pipeline.io.writers import atomic_write_text
from data_pipeline.tokenize.chat import encode_chat_unit, sample_tokens
from data_pipeline.tokenize.config import FORMATS, OVERLONG, PACKINGS, RUNTIME_KEYS, TokenizeConfig
from data_pipeline.tokenize.encode import encode_unit
from data_pipeline.tokenize.output_dir import SPLITS, TokenizeOutputDir
from data_pipeline.tokenize.pack import pack_shard, plan_shards, split_streams
from data_pipeline.tokenize.summary import TokenizeSummary
from data_pipeline.tokenizer.hf_added_tokens import write_grown_tokenizer
from data_pipeline.tokenizer.hf_tokenizer import HFTokenizerFiles, load_tokenizer_files

log = logging.getLogger(__name__)


def validate(config: TokenizeConfig) -> None:
    """Fail before any work on a setting that cannot work, naming it."""
    problems = []
    if not 0 <= config.val_fraction < 1:
        problems.append(f"val_fraction={config.val_fraction}: must be at least 0 and below 1")
    if config.workers < 0:
        problems.append(f"workers={config.workers}: set a number of processes, or 0 for all cores")
    if config.unit_size_mb <= 0:
        problems.append(f"unit_size_mb={config.unit_size_mb}: need > 0")
    if config.tokens_per_shard < 1:
        problems.append(f"tokens_per_shard={config.tokens_per_shard}: need at least 1 (default 2^28 = 268435456)")
    if config.fingerprint_ngram is not None and config.fingerprint_ngram < 1:
        problems.append(
            f"fingerprint_ngram={config.fingerprint_ngram}: need >= 1 words per gram, or null for no fingerprint"
        )
    if config.format not in FORMATS:
        problems.append(f"format={config.format}: choose one of {', '.join(FORMATS)}")
    if config.chat.packing not in PACKINGS:
        problems.append(f"chat.packing={config.chat.packing}: choose one of {', '.join(PACKINGS)}")
    if config.chat.overlong not in OVERLONG:
        problems.append(f"chat.overlong={config.chat.overlong}: choose one of {', '.join(OVERLONG)}")
    if config.chat.seq_len < 1:
        problems.append(f"chat.seq_len={config.chat.seq_len}: need at least 1 (the fine-tuning run's train.seq_len)")
    if config.executor.kind not in EXECUTOR_KINDS:
        problems.append(f"executor={config.executor.kind}: choose one of {', '.join(EXECUTOR_KINDS)}")
    if problems:
        raise ValueError("invalid tokenize config: " + "; ".join(problems))


def shard_tokenizer(config: TokenizeConfig, scratch: Path) -> TokenizerFiles | HFTokenizerFiles:
    """The tokenizer asked for, or with add_special_tokens its grown copy (written to ``scratch``)."""
    tokenizer = load_tokenizer_files(config.tokenizer)
    if not config.add_special_tokens:
        return tokenizer
    if not isinstance(tokenizer, HFTokenizerFiles):
        raise ValueError(
            f"add_special_tokens=true: tokenizer={config.tokenizer} is one of ours, which has a mask token and "
            "sentinels already; set add_special_tokens=false (it is for Hugging Face tokenizers)"
        )
    write_grown_tokenizer(tokenizer.model_path.parent, scratch, config.num_sentinels)
    return load_tokenizer_files(scratch)


def claim_output_dir(
    layout: TokenizeOutputDir, config: TokenizeConfig, tokenizer_hash: str, units: list[InputUnit]
) -> None:
    """Resume only what the same settings, tokenizer and inputs started."""
    if not layout.run_file.exists() and any(find_shards(layout.root, split) for split in SPLITS):
        raise ValueError(
            f"output_dir={config.output_dir} holds token shards of another run (or of an earlier version of "
            "tokenize); use a new output_dir, or delete this one to start over"
        )
    layout.claim(config, RUNTIME_KEYS, tokenizer_hash=tokenizer_hash, inputs=[str(unit) for unit in units])


def prepare_output_dir(
    config: TokenizeConfig, layout: TokenizeOutputDir, units: list[InputUnit]
) -> TokenizerFiles | HFTokenizerFiles:
    """Claim output_dir and give it the tokenizer; returns that copy (what the units load)."""
    # A grown tokenizer is made aside, so that output_dir keeps its own until the claim agrees.
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = shard_tokenizer(config, Path(scratch))
        layout.work.mkdir(parents=True, exist_ok=True)
        claim_output_dir(layout, config, tokenizer.special_tokens.tokenizer_hash, units)
        # The tokenizer travels with the shards: training with data.path alone finds it.
        copy_tokenizer_files(tokenizer.model_path.parent, layout.root)
    tokenizer = load_tokenizer_files(layout.root)
    tokenizer.special_tokens.save(layout.root)
    return tokenizer


def fingerprint_stage(layout: TokenizeOutputDir, stats: list[dict[str, Any]]) -> Stage:
    """The merge of the encode units' n-gram runs into the train split's fingerprint, one
    range of the hash space per unit (decontaminate/fingerprint.py)."""
    runs = [layout.fingerprint / name for unit_stats in stats for name in unit_stats["fingerprint"]["runs"]]
    ranges = plan_ranges(runs, sum(unit_stats["fingerprint"]["hashes"] for unit_stats in stats))
    return Stage(
        "fingerprint", ranges, partial(merge_range, folder=str(layout.fingerprint)), layout.markers("fingerprint")
    )


def publish_fingerprint(layout: TokenizeOutputDir, merge: Stage, n: int) -> None:
    if (layout.root / FINGERPRINT_META).exists():  # published by an earlier run of this command
        return
    meta = publish(layout.root, layout.fingerprint, list(merge.units), n)
    log.info(
        "n-gram fingerprint of the train split: %s distinct %d-grams in %s", f"{meta['hashes']:,}", n, FINGERPRINT_FILE
    )


def tokenize_corpus(config: TokenizeConfig) -> TokenizeSummary | None:
    """Run both stages; returns the summary, or None while units submitted elsewhere
    (executor=slurm with wait=false) are still to finish."""
    validate(config)
    # absolute: Ray workers and Slurm jobs do not run in this directory
    layout = TokenizeOutputDir(Path(config.output_dir).resolve())
    units = split_into_units(resolve_corpus_inputs(config.input), config.unit_size_mb, config.reader.hf)
    tokenizer = prepare_output_dir(config, layout, units)
    special = tokenizer.special_tokens
    workers = config.workers or os.cpu_count() or 1
    executor = build_executor(config.executor, workers, config.progress, Task(0, 1), layout.work)

    start = time.perf_counter()
    unit_config = replace(config, output_dir=str(layout.root))
    chat = config.format == "chat"
    encode_function = encode_chat_unit if chat else encode_unit
    encode = Stage(
        "encode", units, partial(encode_function, config=unit_config, tokenizer=tokenizer), layout.markers("encode")
    )
    pending = set(encode.pending())
    ran_now = [unit in pending for unit in units]
    log.info("tokenizing %d units (%d already done) into %s", len(units), ran_now.count(False), layout.root)
    executor.run([encode])
    if message := encode.missing_message():
        log.info("%s: re-run the same command once they are done", message)
        return None
    stats = encode.stats()
    # Chat samples stay whole: no train conversation moves to an empty val split (it would
    # cut a sample), and a shard holds a whole number of samples.
    streams, promoted = split_streams(units, stats, layout, 0.0 if chat else config.val_fraction)
    per_sample = sample_tokens(config.chat) if chat else None
    tokens_per_shard = (
        max(config.tokens_per_shard // per_sample, 1) * per_sample if per_sample else config.tokens_per_shard
    )
    shards = {split: plan_shards(split, streams[split], tokens_per_shard) for split in SPLITS}
    pack = Stage(
        "pack",
        [shard for split in SPLITS for shard in shards[split]],
        partial(
            pack_shard,
            output_dir=str(layout.root),
            vocab_size=special.vocab_size,
            tokenizer_hash=special.tokenizer_hash,
            loss_mask=chat,
        ),
        layout.markers("pack"),
    )
    # Chat sets are fine-tuning data, not the pretraining corpus that evaluation is audited against.
    merge = fingerprint_stage(layout, stats) if config.fingerprint_ngram is not None and not chat else None
    stages = [pack] if merge is None else [pack, merge]
    executor.run(stages)  # together: both need only the encode units, and Ray or Slurm start once
    for stage in stages:
        if message := stage.missing_message():
            log.info("%s: re-run the same command once they are done", message)
            return None
    for split in SPLITS:
        SplitIndex(
            split,
            special.tokenizer_hash,
            tokens_per_shard,
            unit_stats(pack.marker_dir, shards[split]),
            sample_tokens=per_sample,
        ).save(layout.root)
    if merge is not None:
        publish_fingerprint(layout, merge, config.fingerprint_ngram)
    shutil.rmtree(layout.runs, ignore_errors=True)  # every shard is out of them now
    summary = TokenizeSummary.collect(
        stats,
        ran_now,
        {split: len(shards[split]) for split in SPLITS},
        config.val_fraction,
        tokens_per_shard,
        time.perf_counter() - start,
    )
    for document in promoted:
        summary.move_to_val(document.num_tokens)
    atomic_write_text(layout.summary, json.dumps(summary.to_json(), indent=1))
    return summary


def tokenize_command(config: TokenizeConfig) -> None:
    summary = tokenize_corpus(config)
    if summary is not None:
        print(summary)


main = hydra_command("tokenize", TokenizeConfig, tokenize_command)
