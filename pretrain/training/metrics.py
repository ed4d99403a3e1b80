"""Training metrics: console (progress bar on a terminal), ``<run_dir>/metrics.jsonl``,
``<run_dir>/train.log`` and wandb."""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any, Optional

import torch

from data_pipeline.progress import on_terminal, progress_bar
from pretrain.config import WandbConfig, WandbMode
from pretrain.training.run_log import RunLog

# Dense bf16 tensor-core peak in TFLOP/s, from the vendors' data sheets. The first name
# found in torch.cuda.get_device_name() wins, so more specific names come first.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A10", 125.0),
    ("L4", 121.0),
    ("V100", 125.0),  # fp16: V100 has no bf16
)


def peak_tflops(device: torch.device, override: Optional[float]) -> Optional[float]:
    """Peak dense TFLOP/s of one device, or None when unknown (CPUs, unlisted GPUs)."""
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


def memory_gb(device: torch.device) -> float:
    """Peak memory of this process: device allocations on GPU, resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def format_metrics(record: dict[str, Any]) -> str:
    parts = []
    for key, value in record.items():
        if value is None:
            continue
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


def wandb_mode(configured: WandbMode) -> WandbMode:
    """The configured mode, or ``WANDB_MODE`` from the environment when the config leaves
    wandb at its default (disabled): users and clusters set it there."""
    from_environment = os.environ.get("WANDB_MODE", "")
    if configured is WandbMode.disabled and from_environment in (WandbMode.offline.value, WandbMode.online.value):
        return WandbMode(from_environment)
    return configured


def drop_records_after(path: Path, step: int) -> None:
    """A resumed run logs again the steps after its checkpoint: drop their old records, so
    that metrics.jsonl holds every step once."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        path.write_text("".join(line + "\n" for line in kept))


class MetricsLogger:
    """Only the main process writes; the others keep silent."""

    def __init__(
        self,
        run_dir: Path,
        enabled: bool,
        wandb_cfg: WandbConfig,
        config: dict[str, Any],
        start_step: int = 0,
    ) -> None:
        self.enabled = enabled
        self._file = None
        self._wandb = None
        self._bar = None
        self.run_log = RunLog(run_dir, enabled)
        if not enabled:
            return
        drop_records_after(run_dir / "metrics.jsonl", start_step)
        self._file = open(run_dir / "metrics.jsonl", "a", buffering=1)
        mode = wandb_mode(wandb_cfg.mode)
        if mode is not WandbMode.disabled:
            import wandb

            self._wandb = wandb.init(
                project=wandb_cfg.project,
                name=wandb_cfg.name,
                mode=mode.value,
                dir=str(run_dir),
                config=config,
                resume="allow",
            )

    def start_progress(self, total: int, initial: int) -> None:
        """Only on a terminal: redrawn into a file (Slurm logs) it would only bloat it."""
        if self.enabled and on_terminal():
            self._bar = progress_bar(total=total, initial=initial, unit="step", dynamic_ncols=True)

    def advance(self) -> None:
        """One step done; the bar shows the loss of the last log line (reading every step's
        loss back would wait for the device at every step)."""
        if self._bar is not None:
            self._bar.update(1)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        assert self._file is not None
        self._file.write(json.dumps(record) + "\n")
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{record['loss']:.4f}")
        if self._wandb is not None:
            self._wandb.log(record, step=record["step"])
        self.message(format_metrics(record))

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        self.run_log.write(text)
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._file is not None:
            self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
        self.run_log.close()
