#!/usr/bin/env bash
# Curation on Slurm: a thin wrapper over `python -m data_pipeline.curate executor=slurm`, which
# submits one job array per stage (filter -> buckets -> clusters -> write -> report), each
# after the previous one (afterok), through submitit, and returns once they are queued.
#
#   bash launch/curate_slurm.sh <input glob|dir> <output_dir> [NUM_TASKS] [extra overrides...]
#   e.g. bash launch/curate_slurm.sh '/data/c4/en/*.json.gz' /data/c4-clean 64 executor.slurm.partition=cpu
#
# NUM_TASKS is the most array tasks per stage (each takes every n-th work unit); CPUS the
# cores each task asks for and uses as worker processes. Per-stage resources, e.g.
# 'executor.slurm.stages={clusters: {mem_gb: 64}}', and executor.slurm.wait=true (stay until
# the end) are overrides like any other (docs/curation.md). Resubmitting the same command
# after a failure redoes only the units without a completion marker (<output_dir>/_work/done).
# output_dir must be on a file system that every node sees; sbatch's own SBATCH_ACCOUNT /
# SBATCH_PARTITION environment variables apply as usual. Logs: <output_dir>/_work/slurm/.
set -euo pipefail
INPUT=${1:?usage: curate_slurm.sh <input> <output_dir> [num_tasks] [overrides...]}
OUTPUT=${2:?usage: curate_slurm.sh <input> <output_dir> [num_tasks] [overrides...]}
NUM_TASKS=${3:-8}
shift $(( $# < 3 ? $# : 3 ))
CPUS=${CPUS:-8}
PYTHON=${PYTHON:-python}
exec "$PYTHON" -m data_pipeline.curate "input=$INPUT" "output_dir=$OUTPUT" progress=false \
  executor=slurm executor.slurm.max_array_tasks="$NUM_TASKS" executor.slurm.cpus_per_task="$CPUS" \
  executor.slurm.wait=false "$@"
