"""A stage: a list of independent work units and the function that does one. The executor
owns completion: after a unit's function returns, its stats are written as the unit's marker
(atomically), and a rerun skips every unit that has one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from data_pipeline.executors.pool import run_unordered
from data_pipeline.io.writers import atomic_write_text


class WorkUnit(Protocol):
    @property
    def key(self) -> str:
        """Unique in its stage and usable in a file name."""


@dataclass(frozen=True)
class Stage:
    name: str
    units: Sequence[Any]  # WorkUnit
    # unit -> its stats; picklable, since it runs in other processes, Slurm jobs or Ray tasks
    function: Callable[[Any], dict[str, Any]]
    marker_dir: Path

    def marker(self, unit: WorkUnit) -> Path:
        return marker_path(self.marker_dir, unit)

    def pending(self) -> list[Any]:
        return [unit for unit in self.units if not self.marker(unit).exists()]

    def missing_message(self) -> str | None:
        """What is left to do, or None when every unit is done."""
        pending = self.pending()
        if not pending:
            return None
        return f"the {self.name} stage has {len(pending)} of {len(self.units)} units left, e.g. {pending[0]}"

    def stats(self) -> list[dict[str, Any]]:
        return unit_stats(self.marker_dir, self.units)


def marker_path(marker_dir: Path, unit: WorkUnit) -> Path:
    return marker_dir / f"{unit.key}.done.json"


def unit_stats(marker_dir: Path, units: Sequence[Any]) -> list[dict[str, Any]]:
    """Every unit's stats, in unit order (all units must be done)."""
    return [json.loads(marker_path(marker_dir, unit).read_text()) for unit in units]


def run_unit(stage: Stage, unit: Any) -> dict[str, Any]:
    """Do one unit and publish its marker: the unit counts as done only once this returns."""
    stats = stage.function(unit)
    stage.marker_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stage.marker(unit), json.dumps(stats, indent=1))
    return stats


def run_units(stage: Stage, units: Sequence[Any], workers: int) -> None:
    """Do `units` of `stage` with `workers` local processes (what one Slurm array task runs)."""
    for _ in run_unordered(UnitCall(stage), list(units), workers, describe=describe_unit(stage)):
        pass


@dataclass(frozen=True)
class UnitCall:
    """run_unit bound to a stage, picklable for worker processes."""

    stage: Stage

    def __call__(self, unit: Any) -> dict[str, Any]:
        return run_unit(self.stage, unit)


def describe_unit(stage: Stage) -> Callable[[Any], str]:
    return lambda unit: f"{stage.name} unit {unit}"
