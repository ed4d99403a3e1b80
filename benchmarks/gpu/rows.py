"""What benchmarks/gpu.sh measures: training configurations, each run by several runners,
in the order they run (the most telling first, so a run cut short by its time budget still
answers the main question: gpt-1.3b, seq 2048, bf16, one GPU)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

# Runners: the framework's Trainer, the bare loop of our GPT, transformers' Llama of the same
# shape in the same bare loop, and the planner's prediction (no process of its own: arithmetic).
OURS, BARE, HF, PLANNER = "ours", "bare", "transformers", "planner"
RUNNERS = (OURS, BARE, HF, PLANNER)


@dataclass(frozen=True)
class Shape:
    """What every row of a mode shares."""

    seq_len: int
    vocab: int
    precision: str
    steps: int  # timed steps, after as many warm-up steps (compilation included there)
    micro_batch: dict[str, int]  # per model


@dataclass(frozen=True)
class Setup:
    """One training configuration."""

    model: str
    objective: str = "clm"
    document_masking: bool = False
    compile: bool = False

    @property
    def attention(self) -> str:
        return self.objective + ("+docs" if self.document_masking else "")

    @property
    def label(self) -> str:
        return f"{self.model} {self.attention} compile={'on' if self.compile else 'off'}"

    def runners(self) -> tuple[str, ...]:
        """The bare loops take plain causal LM only: transformers' Llama has no prefix-LM or
        document mask here, and the bare loop of our GPT would run the very attention code
        the framework runs, so for span and document masking the comparison is the same
        model's clm row (what the mask costs)."""
        return RUNNERS if self.attention == "clm" else (OURS, PLANNER)


@dataclass(frozen=True)
class Row:
    setup: Setup
    runner: str

    def spec(self, shape: Shape) -> dict:
        """What a row's own process is told (JSON)."""
        return {**asdict(self.setup), "runner": self.runner, "shape": asdict(shape)}


GPU = Shape(
    seq_len=2048, vocab=32000, precision="bf16", steps=5, micro_batch={"gpt-125m": 16, "gpt-350m": 16, "gpt-1.3b": 8}
)  # fit 80 GB without activation checkpointing
CPU = Shape(
    seq_len=128, vocab=256, precision="fp32", steps=2, micro_batch={"tiny": 4}
)  # the generated corpus's vocabulary


def gpu_setups(models: list[str]) -> list[Setup]:
    """Most telling first: gpt-1.3b compiled (the MFU goal) and eager; then the eager rows of
    the smaller models (cheap: no compilation); the FlexAttention rows (span, document
    masking) compiled, since FlexAttention is fast compiled only; last the smaller models
    compiled. Compilation takes most of a compiled row's time (~30-70 s each)."""
    big, small = [m for m in models if m == "gpt-1.3b"], [m for m in models if m != "gpt-1.3b"]
    setups = [Setup(m, compile=c) for m in big for c in (True, False)]
    setups += [Setup(m) for m in small]
    setups += [
        Setup(m, objective, masking, compile=True)
        for m in small
        for objective, masking in (("span", False), ("clm", True))
    ]
    setups += [Setup(m, compile=True) for m in small]
    return setups


def cpu_setups(models: list[str]) -> list[Setup]:
    """The same code on CPU, compile off (compiling takes minutes on a small CPU)."""
    return [
        Setup(m, objective, masking)
        for m in models
        for objective, masking in (("clm", False), ("span", False), ("clm", True))
    ]


def rows(setups: list[Setup]) -> Iterator[Row]:
    for setup in setups:
        for runner in setup.runners():
            yield Row(setup, runner)


def micro_batch(shape: Shape, model: str) -> int:
    return shape.micro_batch.get(model, min(shape.micro_batch.values()))


def train_overrides(setup: Setup, shape: Shape, corpus: Path, run_dir: Path) -> list[str]:
    """The row's config: one micro-batch per step; ``pretrain.train``'s loop logs twice, after
    the warm-up steps and after the timed ones; no checkpoint, no evaluation."""
    micro = micro_batch(shape, setup.model)
    return [
        f"data.path={corpus}",
        f"run_dir={run_dir}",
        f"model={setup.model}",
        f"model.vocab_size={shape.vocab}",
        f"train.seq_len={shape.seq_len}",
        f"model.max_seq_len={shape.seq_len}",
        f"train.precision={shape.precision}",
        f"train.micro_batch_size={micro}",
        f"train.global_batch_size={micro}",
        f"train.compile={str(setup.compile).lower()}",
        f"objective={setup.objective}",
        f"objective.document_masking={str(setup.document_masking).lower()}",
        f"train.max_steps={2 * shape.steps}",
        f"train.log_every={shape.steps}",
        "train.eval_every=0",
        "train.eval_batches=0",
        "train.save_every=0",
        "train.save_at_end=false",
        "logging.progress_bar=false",
        "optim.warmup_steps=0",
        "resume=never",
    ]
