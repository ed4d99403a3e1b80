#!/usr/bin/env bash
# Curation on Slurm: the filter and write stages as job arrays (one task per array index,
# each taking every NUM_TASKS-th input file), the dedup merge as one job between them.
#
#   bash launch/curate_slurm.sh <input glob|dir> <output_dir> [NUM_TASKS] [extra overrides...]
#   e.g. bash launch/curate_slurm.sh '/data/c4/en/*.json.gz' /data/c4-clean 64 workers=8
#
# Each task reads its index from SLURM_ARRAY_TASK_ID/COUNT (data_pipeline/executors/tasks.py). Every
# stage can be resubmitted after a failure: finished files and stages have completion
# markers under <output_dir>/_work and are not redone. output_dir must be on a file system
# that every node sees. Set SBATCH_ACCOUNT / SBATCH_PARTITION etc. in the environment as
# your cluster requires; CPUS is the cores each task asks for (and uses as workers).
set -euo pipefail
INPUT=${1:?usage: curate_slurm.sh <input> <output_dir> [num_tasks] [overrides...]}
OUTPUT=${2:?usage: curate_slurm.sh <input> <output_dir> [num_tasks] [overrides...]}
NUM_TASKS=${3:-8}
shift $(( $# < 3 ? $# : 3 ))
CPUS=${CPUS:-8}
PYTHON=${PYTHON:-python}
mkdir -p "$OUTPUT/_work/slurm"
CURATE="$PYTHON -m data_pipeline.curate input='$INPUT' output_dir='$OUTPUT' workers=$CPUS progress=false $*"
common=(--parsable --cpus-per-task="$CPUS" --output="$OUTPUT/_work/slurm/%x-%A_%a.log")

filter=$(sbatch "${common[@]}" --job-name=curate-filter --array=0-$((NUM_TASKS - 1)) \
  --wrap="$CURATE stage=filter")
dedup=$(sbatch "${common[@]}" --job-name=curate-dedup --dependency=afterok:"$filter" \
  --wrap="$CURATE stage=dedup task_index=0 num_tasks=1")
write=$(sbatch "${common[@]}" --job-name=curate-write --array=0-$((NUM_TASKS - 1)) --dependency=afterok:"$dedup" \
  --wrap="$CURATE stage=write")
echo "submitted: filter $filter -> dedup $dedup -> write $write; report: $OUTPUT/report.json"
