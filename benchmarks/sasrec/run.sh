#!/usr/bin/env bash
# SASRec (RecBole 1.2.1) on exactly our split, end to end: export the split, train to convergence (validation
# NDCG@10, patience 5; going on from OUT/saved/progress.pth when an earlier run was cut short), rank its scores with
# our metric code.
#   bash benchmarks/sasrec/run.sh runs/sasrec                                # ml-100k
#   bash benchmarks/sasrec/run.sh runs/sasrec-ml-1m --dataset ml-1m           # MovieLens-1M
#   bash benchmarks/sasrec/run.sh runs/sasrec-ml-1m-h200 --dataset ml-1m --max-history 200
# The split flags (--dataset, --cold-items, --seed, --max-history) go to export.py and rank.py alike.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$1; shift
[ -x .venv-recbole/bin/python ] || bash benchmarks/sasrec/setup.sh
python benchmarks/sasrec/export.py --out "$out" --patience 5 "$@"
resume=(); [ -f "$out/saved/progress.pth" ] && resume=(--resume)
/usr/bin/time -v .venv-recbole/bin/python benchmarks/sasrec/train_score.py --out "$out" "${resume[@]}" \
    > "$out.log" 2> "$out.err"
python benchmarks/sasrec/rank.py --out "$out" "$@"
