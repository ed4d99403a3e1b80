"""Helpers shared by the data pipeline tests (pytest's importlib mode cannot import conftest)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TypeVar

import psutil

Config = TypeVar("Config")


def with_overrides(config: Config, **overrides: Any) -> Config:
    """Set nested dataclass fields, ``executor__ray__num_cpus=2`` for ``config.executor.ray.num_cpus``."""
    for dotted, value in overrides.items():
        target = config
        *parents, last = dotted.split("__")
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, last, value)
    return config


def wait_for_worker_reading(parent_pid: int, name: str, timeout_s: float) -> psutil.Process:
    """The child process of ``parent_pid`` that has the file ``name`` open (a busy worker)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in psutil.Process(parent_pid).children(recursive=True):
            try:
                if any(Path(f.path).name == name for f in child.open_files()):
                    return child
            except psutil.Error:
                continue
        time.sleep(0.05)
    raise AssertionError(f"no worker opened {name} within {timeout_s} s")
