"""The GPU check and benchmark: is the framework correct on CUDA, and how fast is it?

    benchmarks/gpu.sh                      # one H100/H200: the GPU lane, then the table (at most 8 minutes)
    benchmarks/gpu.sh --device cpu         # the same code on CPU, tiny model (a test runs it)

First the GPU lane (``python -m pytest tests/gpu -x -q``); if it fails, its failures are
printed and nothing else runs. Then the throughput table: for each configuration
(benchmarks/gpu/rows.py: gpt-125m, gpt-350m, gpt-1.3b at seq 2048, bf16, compile off and
on, ``objective=span`` and document masking) the framework's Trainer, a bare loop of our GPT
(benchmarks/bare_loop.py) and transformers' Llama of the same shape in that loop, each in a
process of its own, and the planner's prediction. Per row: tokens/s, TFLOP/s, MFU, peak
memory, the ratio to the bare loop. A row that fails prints one line and the table goes on;
rows that would start past ``--budget-s`` are listed as skipped. Last, the long-sequence
rows (benchmarks/gpu/longest.py): the longest sequence one device trains ``--long-model`` on,
lengths doubling from ``--long-start`` to ``--long-cap``, activation checkpointing off and on,
beside the planner's longest. docs/performance.md says what each number means.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bare_loop, gpu.*
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "pretrain"))
from conftest import write_corpus  # noqa: E402  (the tests' generated corpus)
from gpu.launch import REPO, exit_on_sigterm, row_environment, run_row_process  # noqa: E402
from gpu.longest import LONGEST, LongSetup, corpus_documents, markdown, planned_longest  # noqa: E402
from gpu.planner import one_device_cluster, predict  # noqa: E402
from gpu.report import Record, Report, one_line, progress_line  # noqa: E402
from gpu.rows import CPU, GPU, PLANNER, Row, Setup, Shape, cpu_setups, gpu_setups, rows, train_overrides  # noqa: E402

from pretrain.config import load_train_config  # noqa: E402
from pretrain.model.stats import training_flops_per_token  # noqa: E402
from pretrain.planning.cluster import ClusterConfig  # noqa: E402

MIN_ROW_S = 20.0  # a row given less than this would only time out


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--models", nargs="+", help="default: gpt-125m gpt-350m gpt-1.3b (cuda), tiny (cpu)")
    parser.add_argument(
        "--attention", nargs="+", choices=("clm", "span", "clm+docs"), help="only these rows (default: all)"
    )
    parser.add_argument(
        "--steps", type=int, help="timed steps per row, after as many warm-up steps (default: 5 cuda, 2 cpu)"
    )
    parser.add_argument(
        "--budget-s", type=float, default=450, help="the whole run, lane included: later rows are skipped"
    )
    parser.add_argument("--row-timeout-s", type=float, default=180, help="one row's process at most")
    parser.add_argument("--lane-timeout-s", type=float, default=200)
    parser.add_argument("--skip-lane", action="store_true", help="the table only (the lane passed in an earlier run)")
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "gpu.json", help="the JSON file")
    parser.add_argument("--long-model", help="the long-sequence rows' model (default: gpt-1.3b cuda, tiny cpu)")
    parser.add_argument("--long-start", type=int, help="their first length (default: 8192 cuda, 64 cpu)")
    parser.add_argument("--long-cap", type=int, help="their last length (default: 131072 cuda, 128 cpu)")
    parser.add_argument("--long-only", action="store_true", help="the long-sequence rows only, no throughput rows")
    parser.add_argument("--skip-long", action="store_true", help="no long-sequence rows")
    args = parser.parse_args(argv)
    cpu = args.device == "cpu"
    args.long_setups = (
        []
        if args.skip_long
        else [
            LongSetup(
                args.long_model or ("tiny" if cpu else "gpt-1.3b"),
                recompute,
                args.long_start or (64 if cpu else 8192),
                args.long_cap or (128 if cpu else 131072),
            )
            for recompute in (False, True)
        ]
    )
    args.models = args.models or (["tiny"] if cpu else ["gpt-125m", "gpt-350m", "gpt-1.3b"])
    args.shape = dataclasses.replace(CPU if cpu else GPU, **({"steps": args.steps} if args.steps else {}))
    args.setups = cpu_setups(args.models) if cpu else gpu_setups(args.models)
    args.setups = [s for s in args.setups if args.attention is None or s.attention in args.attention]
    if args.long_only:
        args.setups = []
    return args


def probe_gpu() -> tuple[str, float]:
    """The GPU's name and memory, asked in a process of its own: this one never touches CUDA,
    so it holds no device memory while the rows run."""
    code = (
        "import json, torch; p = torch.cuda.get_device_properties(0); "
        "print(json.dumps([p.name, p.total_memory / 2**30]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=row_environment())
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        raise SystemExit(f"error: --device cuda, but torch finds no GPU ({last}); use --device cpu")
    name, memory = json.loads(done.stdout)
    return name, memory


def run_lane(timeout_s: float) -> dict:
    """The GPU lane; its output is printed only when it fails (its failures, -q)."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "pytest", "tests/gpu", "-x", "-q", "-p", "no:cacheprovider"]
    try:
        done = subprocess.run(
            command, cwd=REPO, env=row_environment(), capture_output=True, text=True, timeout=timeout_s
        )
        passed, output = done.returncode == 0, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        passed, output = False, f"{err.stdout or ''}\nthe GPU lane ran past --lane-timeout-s {timeout_s:.0f}"
    summary = (output.strip().splitlines() or ["no output"])[-1]
    if not passed:
        print(output[-12000:])
    return {"passed": passed, "summary": summary, "seconds": round(time.perf_counter() - started, 1)}


def resident_mib() -> float:
    """This process's resident memory now (not its peak)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def config_error(setup: Setup, shape: Shape, corpus: Path) -> Optional[str]:
    """Why the configuration cannot load (an unknown model, say), checked before any row's
    process starts: its rows fail at once instead of spending device time."""
    try:
        load_train_config(train_overrides(setup, shape, corpus, corpus))
    except Exception as err:
        return one_line(err)
    return None


def planned(setup: Setup, shape: Shape, corpus: Path, cluster: ClusterConfig) -> dict:
    try:
        return predict(setup, shape, corpus, cluster)
    except Exception as err:  # a layout the planner refuses: that row's one line
        return {"error": one_line(err)}


def measure(
    row: Row,
    shape: Shape,
    corpus: Path,
    work: Path,
    log: Path,
    timeout_s: float,
    cluster: ClusterConfig,
    predictions: dict[Setup, dict],
) -> Record:
    """``predictions``: the planner's, or the config's error, for every setup."""
    started = time.perf_counter()
    if row.runner == PLANNER or "error" in predictions[row.setup]:
        result = predictions[row.setup]
    else:
        result = run_row_process(row.spec(shape), corpus, work, log, timeout_s)
    seconds = time.perf_counter() - started
    if "error" in result:
        return Record.of(row, "failed", seconds=seconds, note=result["error"])
    model = load_train_config(train_overrides(row.setup, shape, corpus, work)).model  # a valid config: the row ran
    record = Record.of(row, "ok", peak_gib=result["peak_gib"], seconds=seconds)
    record.measured(result["tokens_per_s"], training_flops_per_token(model, shape.seq_len), cluster.peak_tflops)
    return record


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    started = time.perf_counter()
    if args.device == "cpu":  # one core per row, as configs/cluster/cpu.yaml's peak is calibrated
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    gpu_name, gpu_memory = probe_gpu() if args.device == "cuda" else (None, None)
    cluster = one_device_cluster(gpu_name, gpu_memory)
    report = Report(
        header={"device": gpu_name or "cpu", "cluster": cluster.name, "shape": dataclasses.asdict(args.shape)}
    )
    print(
        f"device: {report.header['device']}; cluster config {cluster.name}; "
        f"seq {args.shape.seq_len}, {args.shape.precision}, "
        f"vocab {args.shape.vocab}; {args.shape.steps} warm-up + {args.shape.steps} timed steps per row",
        flush=True,
    )
    if args.device == "cpu" or args.skip_lane:
        report.header["lane"] = {"passed": None, "summary": "skipped", "seconds": 0}
    else:
        report.header["lane"] = run_lane(args.lane_timeout_s)
        print(f"GPU lane: {report.header['lane']['summary']}", flush=True)
        if not report.header["lane"]["passed"]:
            report.write_json(args.out)
            print("error: the GPU lane failed (above); the throughput table was not run")
            return 1
    logs = args.out.with_name(args.out.stem + "-logs")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = write_corpus(Path(tmp) / "tokens", train_shards=2, docs_per_shard=400)
        # The configs are checked and the planner's rows made first, all at once: arithmetic in
        # this process, whose memory then stays flat while the rows run in theirs.
        errors = {setup: config_error(setup, args.shape, corpus) for setup in args.setups}
        predictions = {
            setup: {"error": error} if error else planned(setup, args.shape, corpus, cluster)
            for setup, error in errors.items()
        }
        for index, row in enumerate(rows(args.setups)):
            left = args.budget_s - (time.perf_counter() - started)
            if left < min(MIN_ROW_S, args.row_timeout_s) and row.runner != PLANNER:
                record = Record.of(row, "skipped", note=f"past --budget-s {args.budget_s:.0f}")
            else:
                label = f"{index:02d}-{row.setup.label.replace(' ', '-').replace('=', '')}-{row.runner}"
                record = measure(
                    row,
                    args.shape,
                    corpus,
                    Path(tmp) / f"run{index}",
                    logs / f"{label}.log",
                    min(args.row_timeout_s, left),
                    cluster,
                    predictions,
                )
            record.parent_rss_mib = resident_mib()
            report.add(record)
            report.write_json(args.out)
            print(progress_line(record), flush=True)
        long_records = report.header["longest"] = []
        for index, setup in enumerate(args.long_setups):
            long_records.append(measure_longest(setup, args, Path(tmp), logs / f"long{index}", cluster, started))
            report.write_json(args.out)
            print(f"longest sequence {setup.label}: {long_records[-1]}", flush=True)
    if report.records:
        print(f"\n{report.markdown()}")
    if args.long_setups:
        print(f"\n{markdown(report.header['longest'])}")
    print(f"\nJSON: {args.out}; each row's output: {logs}/; total {time.perf_counter() - started:.0f} s")
    failed = any(r.status == "failed" for r in report.records) or any("error" in r for r in report.header["longest"])
    return 1 if failed else 0


def measure_longest(
    setup: LongSetup, args: argparse.Namespace, tmp: Path, log: Path, cluster: ClusterConfig, started: float
) -> dict:
    """One long-sequence row: the search in a process of its own (a corpus long enough for
    its longest windows, written once), the planner's longest beside it."""
    record: dict = dataclasses.asdict(setup)
    corpus = tmp / f"long-tokens-{setup.cap}"
    if not corpus.exists():
        write_corpus(corpus, train_shards=2, docs_per_shard=corpus_documents(setup.cap))
    try:
        record["planned"] = planned_longest(setup, args.shape, corpus, cluster)
    except Exception as err:  # an unknown model, say: the row's one line
        return {**record, "error": one_line(err), "note": one_line(err)}
    left = args.budget_s - (time.perf_counter() - started)
    if left < min(MIN_ROW_S, args.row_timeout_s):
        return {**record, "note": f"skipped: past --budget-s {args.budget_s:.0f}"}
    spec = {**dataclasses.asdict(setup), "runner": LONGEST, "shape": dataclasses.asdict(args.shape)}
    run_dir = tmp / f"long-{setup.model}-{'on' if setup.recompute else 'off'}"
    result = run_row_process(spec, corpus, run_dir, log.with_suffix(".log"), left)
    if "error" in result:
        return {**record, "error": result["error"], "note": result["error"]}
    return {**record, **result}


if __name__ == "__main__":
    sys.exit(main())
