#!/usr/bin/env bash
# One qatbench sweep over a Slurm array: task I runs shard I of K into one run folder on a shared disk.
# Submit with deploy/slurm-submit.sh (the array, then a merge job that waits for it); by hand:
#   sbatch deploy/slurm-array.sh                          # K tasks, K = SHARDS below
#   QATBENCH_RUN=sweep1 QATBENCH_RESUME=1 sbatch --array=3 deploy/slurm-array.sh   # resubmit index 3
#   bash deploy/slurm-array.sh --merge                    # merge + gate (what the merge job runs)
# Run from the repo root on a shared filesystem (results/ and the cache must be visible to every node).
# Settings (environment): QATBENCH_RUN (run id; default slurm-<array job id>, required to resume),
# QATBENCH_TIER (default full), QATBENCH_RESUME=1, QATBENCH_PYTEST_ARGS (extra pytest words, split on
# spaces), QATBENCH_PYTHON (default python3; e.g. "apptainer exec qatbench.sif python3" for the image).
#SBATCH --job-name=qatbench
#SBATCH --array=0-3
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --time=12:00:00
#SBATCH --output=qatbench-%A_%a.out
set -euo pipefail

# K: the one shard count, here and in the --array range above (tests/test_deploy.py checks they agree;
# slurm-submit.sh passes --array=0-(K-1) from QATBENCH_SHARDS when that is set). Never SLURM_ARRAY_TASK_COUNT:
# a resubmit of one index has a count of 1, which would turn shard 3/4 into "3/1" and shard 0 into the whole sweep.
SHARDS="${QATBENCH_SHARDS:-4}"
run="${QATBENCH_RUN:-slurm-${SLURM_ARRAY_JOB_ID:-local}}"
tier="${QATBENCH_TIER:-full}"
results="${QATBENCH_RESULTS:-results}"
done_dir="$results/$run/shards-done"
export QATBENCH_CACHE="${QATBENCH_CACHE:-$PWD/.qatbench-cache}"
read -r -a python <<< "${QATBENCH_PYTHON:-python3}"
read -r -a extra <<< "${QATBENCH_PYTEST_ARGS:-}"

if [ "${1:-}" = --merge ]; then
  gate=()
  if [ -f "results/baselines/$tier.json" ]; then gate=(--baseline "results/baselines/$tier.json"); fi
  rc=0
  "${python[@]}" -m harness merge "$results/$run" "${gate[@]}" || rc=$?
  # The gate sees only records; a shard whose cases failed their checks, or that never finished, fails too.
  for ((i = 0; i < SHARDS; i++)); do
    if [ ! -f "$done_dir/$i" ]; then echo "shard $i/$SHARDS did not finish" >&2; rc=1
    elif [ "$(cat "$done_dir/$i")" != 0 ]; then echo "shard $i/$SHARDS had failing cases" >&2; rc=1; fi
  done
  exit "$rc"
fi

: "${SLURM_ARRAY_TASK_ID:?submit with sbatch (deploy/slurm-submit.sh), or run --merge}"
if [ "${QATBENCH_RESUME:-0}" != 1 ] && [ "${SLURM_ARRAY_TASK_COUNT:-$SHARDS}" != "$SHARDS" ]; then
  echo "the array has ${SLURM_ARRAY_TASK_COUNT} tasks but SHARDS=$SHARDS: submit with deploy/slurm-submit.sh" \
       "(QATBENCH_SHARDS=K), or resubmit single indexes with QATBENCH_RESUME=1" >&2
  exit 2
fi
if [ "${QATBENCH_RESUME:-0}" = 1 ]; then
  : "${QATBENCH_RUN:?set QATBENCH_RUN to the run to resume}"
  where=(--qat-resume "$run")
else
  where=(--qat-run-id "$run")
fi
shard="${SLURM_ARRAY_TASK_ID}/${SHARDS}"
# TensorFlow's thread pools sized to the task's CPUs, not to the node's cores.
threads="${SLURM_CPUS_PER_TASK:?declare --cpus-per-task}"
echo "qatbench: shard $shard of run $run, tier $tier, $threads threads"
rc=0
"${python[@]}" -m pytest benchmarks -q --qat-tier "$tier" --qat-results "$results" --qat-shard "$shard" \
  --qat-threads "$threads" "${where[@]}" "${extra[@]}" || rc=$?
# pytest 0 or 1: every case of the shard is recorded. The task then succeeds, so the merge job
# (--dependency=afterok) runs and reports; the marker keeps pytest's code for the merge's verdict.
if [ "$rc" -le 1 ]; then
  mkdir -p "$done_dir"
  echo "$rc" > "$done_dir/.$SLURM_ARRAY_TASK_ID.tmp"
  mv "$done_dir/.$SLURM_ARRAY_TASK_ID.tmp" "$done_dir/$SLURM_ARRAY_TASK_ID"
  exit 0
fi
exit "$rc"
