"""What to evaluate: one :class:`TaskConfig` per task (also the Hydra schema of ``tasks``)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

from omegaconf import MISSING

from pretrain.choices import Choice
from pretrain.generation.settings import GenerationSettings


class TaskType(Choice):
    # Loss, perplexity and bits per byte of a token-shard directory or a text file.
    perplexity = "perplexity"
    # JSONL {"context", "choices", "label"}: the choice the model finds most likely.
    multiple_choice = "multiple_choice"
    # JSONL {"prompt", "reference" or "references"}: ROUGE and BLEU of the completions.
    generation = "generation"


def open_ended_generation() -> GenerationSettings:
    return GenerationSettings(max_new_tokens=64, stop=["\n\n"])


@dataclass
class TaskConfig:
    type: TaskType = MISSING
    # perplexity: a directory of token shards (scores its `split`), a .jsonl file ({"text"}
    # per line, each a document) or any other text file (one document); else a JSONL file.
    path: str = MISSING
    # The metrics' prefix; default: the type and the file or directory name.
    name: Optional[str] = None
    # Score at most this many examples (perplexity: windows).
    limit: Optional[int] = None
    # perplexity
    split: str = "val"
    seq_len: Optional[int] = None  # window length; default: the run's train.seq_len
    # multiple_choice: few-shot examples come before each context, drawn from fewshot_path
    # (default: the task file itself, never the example being asked).
    num_fewshot: int = 0
    fewshot_path: Optional[str] = None
    fewshot_seed: int = 1234
    target_delimiter: str = " "  # between a context and its answer
    example_delimiter: str = "\n\n"  # between few-shot examples
    # generation
    generation: GenerationSettings = field(default_factory=open_ended_generation)
    # generation: answer each prompt (a user message) or {"messages": [...]} as the assistant,
    # with the tokenizer's chat template, ending at the end of the turn (docs/sft.md)
    chat: bool = False

    @property
    def label(self) -> str:
        return self.name or f"{self.type.value}_{Path(self.path).stem}"

    def validate(self) -> None:
        if not Path(self.path).exists():
            raise FileNotFoundError(f"task {self.label}: path={self.path} does not exist")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"task {self.label}: limit={self.limit} must be positive (or null for all)")
        if self.num_fewshot < 0:
            raise ValueError(f"task {self.label}: num_fewshot={self.num_fewshot} must be >= 0")
        if self.chat and self.type is not TaskType.generation:
            raise ValueError(f"task {self.label}: chat=true applies to type=generation tasks only")
        self.generation.validate()


def with_window_length(tasks: Sequence[TaskConfig], seq_len: int) -> list[TaskConfig]:
    """Perplexity windows default to the length the model was trained on, so that the numbers
    compare with the training run's validation loss."""
    return [task if task.seq_len is not None else replace(task, seq_len=seq_len) for task in tasks]
