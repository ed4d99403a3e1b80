"""``<run_dir>/curves.png``: loss (training and validation) and learning rate against step,
drawn from ``metrics.jsonl``. Also ``python -m pretrain.curves RUN_DIR``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402


def plot_training_curves(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics}: not found; give a training run directory (run_dir of pretrain.train)")
    # A resumed run logs again the steps after its checkpoint: the last record of a step wins.
    by_step = {
        record["step"]: record for record in map(json.loads, filter(str.strip, metrics.read_text().splitlines()))
    }
    records = [by_step[step] for step in sorted(by_step)]
    if not records:
        raise ValueError(f"{metrics} holds no records yet")
    figure, (loss_axis, lr_axis) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=(3, 1))
    loss_axis.plot([r["step"] for r in records], [r["loss"] for r in records], label="training loss")
    evaluated = [r for r in records if "val_loss" in r]
    if evaluated:
        loss_axis.plot(
            [r["step"] for r in evaluated], [r["val_loss"] for r in evaluated], "o-", label="validation loss"
        )
    loss_axis.set_ylabel("loss (nats / token)")
    loss_axis.legend()
    loss_axis.grid(alpha=0.3)
    lr_axis.plot([r["step"] for r in records], [r["lr"] for r in records], color="tab:green")
    lr_axis.set_ylabel("learning rate")
    lr_axis.set_xlabel("step")
    lr_axis.grid(alpha=0.3)
    figure.suptitle(run_dir.name)
    figure.tight_layout()
    out = run_dir / "curves.png"
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Draw <run_dir>/curves.png from <run_dir>/metrics.jsonl.")
    parser.add_argument("run_dir", type=Path)
    try:
        print(plot_training_curves(parser.parse_args().run_dir))
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"pretrain.curves: {err}")


if __name__ == "__main__":
    main()
