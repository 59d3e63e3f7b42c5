#!/usr/bin/env bash
# Submit a qatbench sweep to Slurm: the array (deploy/slurm-array.sh), then a merge job that starts only
# when every submitted task succeeded (--dependency=afterok) and is cancelled if one fails.
#   deploy/slurm-submit.sh                                     # K shards (slurm-array.sh), run slurm-<job id>
#   QATBENCH_RUN=sweep1 QATBENCH_TIER=full QATBENCH_SHARDS=8 deploy/slurm-submit.sh
#   QATBENCH_RUN=sweep1 deploy/slurm-submit.sh --resume 3 5    # resubmit indexes 3 and 5, then merge again
# Prints the two job ids. Run from anywhere; jobs start in the repo root.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: deploy/slurm-submit.sh [--resume INDEX...]  (settings: see deploy/slurm-array.sh)"

array=()
if [ "${1:-}" = --resume ]; then
  shift
  [ "$#" -gt 0 ] || { echo "$usage" >&2; exit 2; }
  : "${QATBENCH_RUN:?set QATBENCH_RUN to the run to resume}"
  export QATBENCH_RESUME=1
  array=(--array="$(IFS=,; echo "$*")")
elif [ "$#" -gt 0 ]; then
  echo "$usage" >&2; exit 2
elif [ -n "${QATBENCH_SHARDS:-}" ]; then
  array=(--array="0-$((QATBENCH_SHARDS - 1))")  # slurm-array.sh reads the same QATBENCH_SHARDS
fi

# --parsable prints "jobid" or "jobid;cluster"; --export=ALL carries the QATBENCH_* settings to the tasks.
sweep=$(sbatch --parsable --export=ALL "${array[@]}" deploy/slurm-array.sh)
sweep="${sweep%%;*}"
export QATBENCH_RUN="${QATBENCH_RUN:-slurm-$sweep}"
merge=$(sbatch --parsable --export=ALL --dependency="afterok:$sweep" --kill-on-invalid-dep=yes \
  --job-name=qatbench-merge --cpus-per-task=1 --mem=4G --time=1:00:00 --output=qatbench-merge-%j.out \
  --wrap="bash deploy/slurm-array.sh --merge")
merge="${merge%%;*}"
echo "sweep job $sweep (run $QATBENCH_RUN), merge job $merge after it"
