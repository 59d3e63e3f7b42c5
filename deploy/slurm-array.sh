#!/usr/bin/env bash
# One qatbench sweep spread over a Slurm array: task I runs shard I of K into one shared run folder.
#   sbatch --array=0-$((K-1)) deploy/slurm-array.sh            # K = number of array tasks
#   QATBENCH_TIER=full QATBENCH_RUN=sweep1 sbatch --array=0-7 deploy/slurm-array.sh
# Run from the repo root on a shared filesystem (results/ and the cache must be visible to every node).
# When all tasks are done:  python -m harness merge results/$QATBENCH_RUN [--baseline results/baselines/full.json]
# A task that died: resubmit its index with QATBENCH_RESUME=1 (sbatch --array=3 ...).
#SBATCH --job-name=qatbench
#SBATCH --cpus-per-task=4
#SBATCH --time=12:00:00
#SBATCH --output=qatbench-%A_%a.out
set -euo pipefail

: "${SLURM_ARRAY_TASK_ID:?submit with sbatch --array=0-K-1}"
shards="${SLURM_ARRAY_TASK_COUNT:-$(( ${SLURM_ARRAY_TASK_MAX:?} + 1 ))}"
shard="${SLURM_ARRAY_TASK_ID}/${shards}"
run="${QATBENCH_RUN:-slurm-${SLURM_ARRAY_JOB_ID:-local}}"
tier="${QATBENCH_TIER:-full}"
export QATBENCH_CACHE="${QATBENCH_CACHE:-$PWD/.qatbench-cache}"

if [ "${QATBENCH_RESUME:-0}" = 1 ]; then where=(--qat-resume "$run"); else where=(--qat-run-id "$run"); fi
echo "qatbench: shard $shard of run $run, tier $tier"
exec python3 -m pytest benchmarks -q --qat-tier "$tier" --qat-shard "$shard" "${where[@]}" \
  ${QATBENCH_PYTEST_ARGS:-}
