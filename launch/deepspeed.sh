#!/usr/bin/env bash
# Train under the deepspeed launcher with a hostfile (it reaches the other nodes over ssh
# and appends --local_rank=N to our arguments, which pretrain.train accepts).
#
#   launch/deepspeed.sh launch/hostfile.example model=gpt-1.3b parallel=3d data.path=...
#
# On a CPU-only machine, one node without ssh (2 processes):
#   DEEPSPEED_ARGS="--num_nodes 1 --no_ssh --node_rank 0 --master_addr 127.0.0.1" \
#     launch/deepspeed.sh launch/hostfile.localhost train.max_steps=10 data.path=...
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTFILE=${1:?usage: launch/deepspeed.sh HOSTFILE [overrides...]}
shift
DEEPSPEED=${DEEPSPEED:-.venv/bin/deepspeed}
# shellcheck disable=SC2086  # DEEPSPEED_ARGS holds several options
exec "$DEEPSPEED" --hostfile "$HOSTFILE" --master_port "${MASTER_PORT:-29500}" ${DEEPSPEED_ARGS:-} \
  --module pretrain.train "$@"
