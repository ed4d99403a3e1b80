#!/usr/bin/env bash
# The GPU benchmark (benchmarks/bench_gpu.py): one table of tokens/s, TFLOP/s and MFU of
# gpt-125m/350m/1.3b against a bare PyTorch loop, at most 8 minutes on one H100/H200.
# Usage: benchmarks/gpu.sh [bench_gpu.py options]   (e.g. --models gpt-125m, --dry-run on CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}"
exec timeout 480 "$PYTHON" benchmarks/bench_gpu.py "$@"
