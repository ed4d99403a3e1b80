"""The benchmark's answer: one record per row, printed as one markdown table and written as
one JSON file (rewritten after every row, so a run cut short keeps what it measured)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from gpu.rows import BARE, Row

COLUMNS = (
    "model",
    "attention",
    "compile",
    "runner",
    "tokens/s",
    "TFLOP/s",
    "MFU",
    "peak GiB",
    "vs bare",
    "seconds",
    "note",
)


@dataclass
class Record:
    model: str
    attention: str  # clm, span, clm+docs
    compile: bool
    runner: str
    status: str  # ok, failed, skipped
    tokens_per_s: Optional[float] = None
    tflops: Optional[float] = None
    mfu: Optional[float] = None
    peak_gib: Optional[float] = None  # predicted, for the planner
    vs_bare: Optional[float] = None
    seconds: Optional[float] = None  # the row's wall time, process start to end
    note: str = ""  # the error, or why it was skipped
    parent_rss_mib: Optional[float] = None  # this benchmark's own resident memory after the row

    @classmethod
    def of(cls, row: Row, status: str, **values: object) -> Record:
        setup = row.setup
        return cls(setup.model, setup.attention, setup.compile, row.runner, status, **values)  # type: ignore[arg-type]

    def measured(self, tokens_per_s: float, flops_per_token: float, peak_tflops: Optional[float]) -> None:
        """TFLOP/s from the model's training FLOPs per token (pretrain/model/stats.py); MFU
        against the device's peak from its cluster config."""
        self.tokens_per_s = tokens_per_s
        self.tflops = flops_per_token * tokens_per_s / 1e12
        self.mfu = None if peak_tflops is None else self.tflops / peak_tflops


@dataclass
class Report:
    header: dict = field(default_factory=dict)  # device, cluster, shape, lane
    records: list[Record] = field(default_factory=list)

    def add(self, record: Record) -> None:
        self.records.append(record)
        self._fill_ratios()

    def _fill_ratios(self) -> None:
        """Each row over the bare loop of our GPT with the same configuration."""
        bare = {
            (r.model, r.attention, r.compile): r.tokens_per_s
            for r in self.records
            if r.runner == BARE and r.tokens_per_s
        }
        for record in self.records:
            base = bare.get((record.model, record.attention, record.compile))
            record.vs_bare = None if base is None or record.tokens_per_s is None else record.tokens_per_s / base

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**self.header, "rows": [asdict(r) for r in self.records]}, indent=1) + "\n")

    def markdown(self) -> str:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
        lines += ["| " + " | ".join(cells(r)) + " |" for r in self.records]
        return "\n".join(lines)


def one_line(err: BaseException) -> str:
    """An error as a row's note: its type and the first line of its message."""
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first}"[:240]


def _number(value: Optional[float], form: str) -> str:
    return "-" if value is None else format(value, form)


def cells(record: Record) -> list[str]:
    return [
        record.model,
        record.attention,
        "on" if record.compile else "off",
        record.runner,
        _number(record.tokens_per_s, ".0f"),
        _number(record.tflops, ".3g"),
        "-" if record.mfu is None else f"{100 * record.mfu:.1f}%",
        _number(record.peak_gib, ".2f"),
        _number(record.vs_bare, ".2f"),
        _number(record.seconds, ".0f"),
        record.note.replace("|", "/"),
    ]


def progress_line(record: Record) -> str:
    """What is printed as each row ends (one line, whatever happened)."""
    first = " ".join(cells(record)[:4])
    if record.status != "ok":
        return f"{first}: {record.status}: {record.note}"
    mfu = "" if record.mfu is None else f", MFU {100 * record.mfu:.1f}%"
    return (
        f"{first}: {record.tokens_per_s:.0f} tokens/s, {record.tflops:.3g} TFLOP/s{mfu}, peak {record.peak_gib:.2f} GiB"
    )
