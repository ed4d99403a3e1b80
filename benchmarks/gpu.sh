#!/usr/bin/env bash
# The one command for a lent GPU (benchmarks/bench_gpu.py): the GPU lane (tests/gpu), then one
# table of tokens/s, TFLOP/s, MFU and peak memory of gpt-125m/350m/1.3b for the framework, a
# bare loop of our GPT, transformers' Llama and the planner; at most 8 minutes on one H100/H200.
# Usage: benchmarks/gpu.sh [--device cpu] [--models ...] [--out bench-out/gpu.json] [--skip-lane]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# As the launchers set it (launch/README.md), for every runner alike: the bare loops do not go
# through pretrain's process-group set-up, which sets it too.
[ -n "${PYTORCH_ALLOC_CONF:-}" ] || export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}"
exec timeout 480 "$PYTHON" benchmarks/bench_gpu.py "$@"
