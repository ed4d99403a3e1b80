"""``<output_dir>/report.png``: documents removed by each curation stage, drawn from
``report.json``."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import matplotlib

from data_pipeline.io.writers import readable_mode

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402


def plot_curation_report(output_dir: str | Path) -> Path:
    output_dir = Path(output_dir)
    report = json.loads((output_dir / "report.json").read_text())
    stages = report["stages"]
    names = [stage["stage"] for stage in stages]
    removed = [stage["removed"] for stage in stages]
    figure, axis = plt.subplots(figsize=(8, 0.45 * len(stages) + 1.5))
    bars = axis.barh(names[::-1], removed[::-1], color="tab:red")
    axis.bar_label(bars, padding=3)
    docs_in, docs_out = report["input"]["documents"], report["output"]["documents"]
    axis.set_xlabel("documents removed")
    axis.set_title(f"{docs_in:,} documents in, {docs_out:,} out")
    axis.margins(x=0.15)
    figure.tight_layout()
    out = output_dir / "report.png"
    # The last tasks to finish may both draw it: write aside, then rename.
    handle, temporary = tempfile.mkstemp(dir=output_dir, prefix=".report.", suffix=".png")
    os.fchmod(handle, readable_mode())
    os.close(handle)
    figure.savefig(temporary, dpi=100)
    plt.close(figure)
    os.replace(temporary, out)
    return out
