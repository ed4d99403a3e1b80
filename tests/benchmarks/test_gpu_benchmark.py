"""benchmarks/gpu.sh --device cpu: the GPU benchmark's whole machinery on CPU (tiny model),
end to end: every runner's row, the long-sequence rows, the tables and the JSON agree, a failing row is one line and
the table goes on, and the benchmark's own memory stays flat from row to row; a row past its
time limit, or a benchmark that is stopped, leaves no row process behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
NUMBER = re.compile(r"^\d+(\.\d+)?$")


def table_rows(stdout: str) -> list[list[str]]:
    lines = stdout[stdout.rindex("| model |") :].splitlines()
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:] if line.startswith("|")]


def test_cpu_run_prints_every_runner_and_a_failing_row_in_one_line(tmp_path: Path) -> None:
    # A fresh process, not one of this test process's (whose RANK/MASTER_PORT may be taken).
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    out = tmp_path / "gpu.json"
    command = [
        REPO / "benchmarks" / "gpu.sh",
        "--device",
        "cpu",
        "--models",
        "no-such-model",
        "tiny",
        "--attention",
        "clm",
        "--skip-long",
        "--out",
        out,
    ]  # span and document masking rows: the same machinery; the long-sequence rows: their own test
    done = subprocess.run(command, capture_output=True, text=True, timeout=480, env=env)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]  # the failing rows say so
    rows = json.loads(out.read_text())["rows"]
    table = table_rows(done.stdout)
    assert len(table) == len(rows)

    failing = [r for r in rows if r["model"] == "no-such-model"]
    assert [r["runner"] for r in failing] == ["ours", "bare", "transformers", "planner"]
    assert all(r["status"] == "failed" and "no-such-model" in r["note"] and "\n" not in r["note"] for r in failing)
    progress = [line for line in done.stdout.splitlines() if line.startswith("no-such-model ")]
    assert len(progress) == len(failing) and all(": failed: " in line for line in progress)  # one line each

    tiny = [r for r in rows if r["model"] == "tiny"]  # they ran after the failures
    assert [r["runner"] for r in tiny] == ["ours", "bare", "transformers", "planner"]
    assert all(r["status"] == "ok" and r["tokens_per_s"] > 0 and r["peak_gib"] > 0 and r["mfu"] > 0 for r in tiny), tiny
    assert tiny[1]["vs_bare"] == 1.0 and tiny[0]["vs_bare"] == tiny[0]["tokens_per_s"] / tiny[1]["tokens_per_s"]

    for record, cells in zip(rows, table):  # the printed table is the JSON's
        assert cells[:4] == [record["model"], record["attention"], "off", record["runner"]]
        if record["status"] == "ok":
            assert all(NUMBER.match(cell) for cell in cells[4:6] + cells[7:10]), cells
            assert int(cells[4]) == round(record["tokens_per_s"]) and float(cells[7]) == round(record["peak_gib"], 2)
        else:
            assert cells[4] == "-" and cells[10] == record["note"]

    first, last = rows[0]["parent_rss_mib"], rows[-1]["parent_rss_mib"]
    assert abs(last - first) <= 0.1 * first, (first, last)


def test_cpu_long_sequence_rows_search_up_to_the_cap(tmp_path: Path) -> None:
    """tiny at 64 then 128 tokens (the CPU cap, which fits), recompute off and on, each in a
    row process; the planner's longest beside them; the printed table is the JSON's. (A run of
    its own: with the throughput rows it would near gpu.sh's 480 s on a loaded machine.)"""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    out = tmp_path / "gpu.json"
    command = [REPO / "benchmarks" / "gpu.sh", "--device", "cpu", "--long-only", "--out", out]
    done = subprocess.run(command, capture_output=True, text=True, timeout=480, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["rows"] == [] and "| model | attention |" not in done.stdout  # no throughput rows
    longest = report["longest"]
    assert [(r["model"], r["recompute"]) for r in longest] == [("tiny", False), ("tiny", True)]
    for record in longest:
        assert (record["longest"], record["failed_at"], record["planned"]) == (128, None, 128), record
        assert record["peak_gib"] > 0
        recompute = "on" if record["recompute"] else "off"
        assert f"| tiny | {recompute} | 128 | {record['peak_gib']:.2f} | none up to 128 | 128 |" in done.stdout


def test_a_row_past_its_time_limit_is_ended_in_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from gpu.launch import run_row_process
    from gpu.rows import CPU, OURS, Row, Setup

    spec = Row(Setup("tiny"), OURS).spec(CPU)
    result = run_row_process(spec, tmp_path / "corpus", tmp_path / "run", tmp_path / "row.log", timeout_s=0.5)
    assert result["error"].startswith("timed out after 0.5 s") and "\n" not in result["error"], result
    assert not (tmp_path / "run").exists()  # ended while still importing


def test_stopping_the_benchmark_ends_the_running_row(tmp_path: Path) -> None:
    """gpu.sh's time limit stops the benchmark with SIGTERM: the row it was running (a process
    group of its own) must not outlive it on the device."""
    spec = json.dumps(
        {
            "model": "tiny",
            "runner": "ours",
            "shape": {"seq_len": 128, "vocab": 256, "precision": "fp32", "steps": 2, "micro_batch": {"tiny": 4}},
        }
    )
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; "
        "from gpu.launch import exit_on_sigterm, run_row_process; exit_on_sigterm(); "
        f"run_row_process({spec}, Path('{tmp_path}/corpus'), Path('{tmp_path}/run'), "
        f"Path('{tmp_path}/row.log'), 600)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    rows: list[str] = []
    deadline = time.monotonic() + 60
    while not rows and time.monotonic() < deadline:
        time.sleep(0.1)
        rows = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True, text=True).stdout.split()
    assert rows, "the row never started"
    parent.terminate()
    assert parent.wait(timeout=30) == 128 + 15
    assert not Path(f"/proc/{rows[0]}").exists() or "zombie" in Path(f"/proc/{rows[0]}/status").read_text()


def test_an_error_inside_a_row_process_comes_back_as_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from gpu.launch import run_row_process
    from gpu.rows import CPU, OURS, Row, Setup

    spec = Row(Setup("tiny"), OURS).spec(CPU)  # a corpus that does not exist
    result = run_row_process(spec, tmp_path / "no-corpus", tmp_path / "run", tmp_path / "row.log", timeout_s=120)
    assert result["error"].count("\n") == 0 and "no-corpus" in result["error"], result
