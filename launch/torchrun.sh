#!/usr/bin/env bash
# Train under torchrun, on one node or many. Every argument is a Hydra override; relative
# paths in them are relative to your working directory (the script does not change it).
#
# One node, 8 GPUs:
#   launch/torchrun.sh model=gpt-350m parallel=zero1 data.path=data/tokens
# Two nodes (run on each; NODE_RANK 0 on the first):
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node-a launch/torchrun.sh model=gpt-1.3b parallel=3d data.path=...
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node-a launch/torchrun.sh model=gpt-1.3b parallel=3d data.path=...
# PYTHON: the interpreter to run (default: python3 on your PATH, e.g. an activated venv).
# On a CPU-only machine, NPROC_PER_NODE defaults to 2 processes (gloo).
# MAX_RESTARTS=N lets torchrun restart the workers after a failure; they resume from the
# last complete checkpoint by themselves (resume=auto).
set -euo pipefail
# The code of this checkout runs, from whatever directory the script is started.
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
# Expandable segments spare the CUDA allocator fragmentation; a user's allocator setting wins.
[ -n "${PYTORCH_ALLOC_CONF:-}" ] || export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
PYTHON=${PYTHON:-python3}
if [ -z "${NPROC_PER_NODE:-}" ]; then
  NPROC_PER_NODE=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count() or 2)')
fi
NNODES=${NNODES:-1}
# The config is checked once for the whole world before any worker starts: a mistake is one
# line (error: ...) and exit status 1, not one line per worker and torchrun's failure report.
WORLD_SIZE=$((NNODES * NPROC_PER_NODE)) "$PYTHON" -m pretrain.train "$@" --check
if [ "$NNODES" = 1 ]; then
  exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NPROC_PER_NODE" \
    --max-restarts="${MAX_RESTARTS:-0}" -m pretrain.train "$@"
fi
exec "$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --node_rank="${NODE_RANK:?set NODE_RANK}" \
  --nproc_per_node="$NPROC_PER_NODE" --max-restarts="${MAX_RESTARTS:-0}" --rdzv_backend=c10d \
  --rdzv_endpoint="${MASTER_ADDR:?set MASTER_ADDR}:${MASTER_PORT:-29500}" --rdzv_id="${RDZV_ID:-pretrain}" \
  -m pretrain.train "$@"
