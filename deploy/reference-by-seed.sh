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
# One commit: every record names the commit that made it (env.git_commit), and a reference answers from
# one. So run it from a worktree pinned at that commit, not from a checkout that moves on while it runs;
# the script refuses to start or go on when HEAD is not the commit of the records already in RUN:
#   git worktree add --detach ../refrun COMMIT && cd ../refrun && deploy/reference-by-seed.sh RUN ...
#   (back in the checkout) cp -r ../refrun/results/RUN/. results/RUN/ && git add $(python3 deploy/reference-finished.py RUN)
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
pinned=$(git rev-parse HEAD) || exit 2
others=$(python3 - "results/$run/cases" "$pinned" <<'PY'
import glob, json, sys
seen = set()
for path in glob.glob(sys.argv[1] + "/*.json"):
    try:
        seen.add((json.load(open(path)).get("env") or {}).get("git_commit"))
    except (OSError, ValueError, AttributeError):
        pass
print(" ".join(sorted(str(c)[:12] for c in seen - {sys.argv[2]})))
PY
)
if [ -n "$others" ]; then
    echo "$0: results/$run holds records of commit(s) $others, HEAD is ${pinned:0:12}: run from a worktree at their commit" >&2
    exit 2
fi
status=0
for seed in $seeds; do
    for model in $models; do
        if [ "$(git rev-parse HEAD)" != "$pinned" ]; then
            echo "$0: HEAD moved from ${pinned:0:12} while running: stopped before $model seed $seed" >&2
            exit 2
        fi
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
