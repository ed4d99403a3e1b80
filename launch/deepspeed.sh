#!/usr/bin/env bash
# Train under the deepspeed launcher with a hostfile (it reaches the other nodes over ssh
# and appends --local_rank=N to our arguments, which pretrain.train accepts). Every other
# argument is a Hydra override; relative paths are relative to your working directory.
#
#   launch/deepspeed.sh launch/hostfile.example model=gpt-1.3b parallel=3d data.path=...
#
# A hostfile that names only this machine (launch/hostfile.localhost: 2 processes on a
# CPU-only machine) starts the processes here, without ssh:
#   launch/deepspeed.sh launch/hostfile.localhost train.max_steps=10 data.path=...
# PYTHON: the interpreter to run (default: python3 on your PATH, e.g. an activated venv);
# DEEPSPEED_ARGS: more launcher options (they replace the no-ssh ones above); MASTER_PORT.
set -euo pipefail
# The code of this checkout runs, from whatever directory the script is started.
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
# Expandable segments spare the CUDA allocator fragmentation; a user's allocator setting wins.
[ -n "${PYTORCH_ALLOC_CONF:-}" ] || export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
PYTHON=${PYTHON:-python3}
HOSTFILE=${1:?usage: launch/deepspeed.sh HOSTFILE [overrides...]}
shift
hosts=$(sed 's/#.*//' "$HOSTFILE" | awk 'NF { print $1 }' | sort -u)
if [ -z "${DEEPSPEED_ARGS+set}" ] && { [ "$hosts" = localhost ] || [ "$hosts" = 127.0.0.1 ]; }; then
  DEEPSPEED_ARGS="--num_nodes 1 --no_ssh --node_rank 0 --master_addr 127.0.0.1"
fi
# shellcheck disable=SC2086  # DEEPSPEED_ARGS holds several options
exec "$PYTHON" -m deepspeed.launcher.runner --hostfile "$HOSTFILE" --master_port "${MASTER_PORT:-29500}" \
  ${DEEPSPEED_ARGS:-} --module pretrain.train "$@"
