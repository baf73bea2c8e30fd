#!/usr/bin/env bash
# Every CPU number of docs/results.md, one run after another (nothing else running), logs under runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs
run() { local name=$1; shift; /usr/bin/time -v python "$@" > "runs/$name.log" 2> "runs/$name.time"; }
run cpu-quick-stacked  examples/finetune.py
# the same LLM without IAM and the two ablations, at IAM's 240 steps ...
run cpu-quick-vanilla  examples/finetune.py --layout vanilla
run cpu-quick-no-intra examples/finetune.py --ablation no-intra
run cpu-quick-no-inter examples/finetune.py --ablation no-inter
# ... and at IAM's wall clock (they cannot use the item-state cache): steps and passes sized from the runs above
# (docs/results.md shows the arithmetic)
run cpu-quick-vanilla-equal-wall examples/finetune.py --layout vanilla --max-steps 172 --evaluations 2 \
    --output-dir runs/cpu-quick-vanilla-equal-wall
run cpu-quick-no-intra-equal-wall examples/finetune.py --ablation no-intra --max-steps 154 --evaluations 2 \
    --output-dir runs/cpu-quick-no-intra-equal-wall
run cpu-quick-no-inter-equal-wall examples/finetune.py --ablation no-inter --max-steps 209 \
    --output-dir runs/cpu-quick-no-inter-equal-wall
run cpu-full-stacked   examples/finetune.py --preset cpu-full
bash benchmarks/sasrec/setup.sh
python benchmarks/sasrec/export.py --out runs/sasrec --patience 5
/usr/bin/time -v .venv-recbole/bin/python benchmarks/sasrec/train_score.py --out runs/sasrec > runs/sasrec.log 2> runs/sasrec.err
python benchmarks/sasrec/rank.py --out runs/sasrec
python benchmarks/speed_memory.py > runs/speed_memory.md
python benchmarks/item_states.py all --json-out runs/item_states.json > runs/item_states_train_serve.md
python benchmarks/item_states_scaling.py all --json-out runs/item_states_scaling.json > runs/item_states_scaling.md
