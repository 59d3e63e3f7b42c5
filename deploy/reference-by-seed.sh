#!/usr/bin/env bash
# The reference tier (results/reference/, issue 32) into one run folder, one (seed, model) at a time and
# resumable: the cases of a seed share its pre-trained model and float control, so running them together
# loads those once (a grid run alternates seeds case by case), and a run stopped anywhere continues where it
# was with the same command. Two of these on disjoint seeds fill one machine's two cores.
#
#   deploy/reference-by-seed.sh RUN "MODEL ..." "SEED ..." [pytest options ...]
#   deploy/reference-by-seed.sh ref14 "mlp cnn minilm2" "0 2 4 6 8" &
#   deploy/reference-by-seed.sh ref14 "mlp cnn minilm2" "1 3 5 7 9" &
#   python -m harness merge results/ref14      # once every part is done: records.jsonl, report, plots
#   git add $(python3 deploy/reference-finished.py ref14)   # a session's finished parts, to keep them
#
# Finished cases with the same config hash are not measured again (--qat-resume), so a record made by other
# code is measured anew: the run stays on one version of the hashed code. One TensorFlow thread each
# (--qat-threads 1, which also keys the pre-training cache). A seed whose cases fail (exit 1) does not stop
# the others; each (seed, model) writes its pytest output to results/RUN/logs/.
set -u
if [ $# -lt 3 ]; then
    echo "usage: $0 RUN \"MODEL ...\" \"SEED ...\" [pytest options ...]" >&2
    exit 2
fi
run=$1 models=$2 seeds=$3
shift 3
mkdir -p "results/$run/cases" "results/$run/logs"
status=0
for seed in $seeds; do
    for model in $models; do
        log="results/$run/logs/$model-s$seed.log"
        python -m pytest benchmarks -q -p no:cacheprovider --qat-tier reference --qat-seeds "$seed" \
            -k "$model-" --qat-resume "$run" --qat-threads 1 --qat-progress off "$@" >"$log" 2>&1
        code=$?
        echo "$(date -u +%FT%TZ) $model seed $seed: pytest exit $code ($(tail -n 1 "$log"))"
        # 0: all passed; 5: nothing selected; 1: some cases failed their checks (kept as records); any other
        # code (usage error, interrupted) is worse and is kept over a 1
        case $code in 0|5) ;; 1) [ "$status" -eq 0 ] && status=1 ;; *) status=$code ;; esac
    done
done
exit $status
