"""benchmarks/gpu.sh runs end to end on CPU (--dry-run: tiny sizes) and prints its table."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
ROW = re.compile(r"^tiny\s+(bare|framework)\s+(\S+)\s+off\s+(\d+)\s+[\d.]+\s+-\s+([\d.]+)$")


def test_dry_run_prints_a_row_per_case_with_throughput_and_ratio() -> None:
    # A fresh process, not one of this test process's (whose RANK/MASTER_PORT may be taken).
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    done = subprocess.run([REPO / "benchmarks" / "gpu.sh", "--dry-run"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    table = done.stdout[done.stdout.rindex("device: CPU") :].splitlines()
    rows = [ROW.match(line) for line in table[2:-1]]
    assert all(rows), table
    assert [(row[1], row[2]) for row in rows] == [("bare", "clm"), ("framework", "clm"), ("framework", "span"), ("framework", "clm+docs")]
    assert all(int(row[3]) > 0 for row in rows)
    assert rows[0][4] == "1.00"  # each row's speed is over the bare loop's
    assert table[-1].startswith("total ")
