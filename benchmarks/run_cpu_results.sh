#!/usr/bin/env bash
# Every CPU number of docs/results.md, one run after another (nothing else running), logs under runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs
run() { local name=$1; shift; /usr/bin/time -v python "$@" > "runs/$name.log" 2> "runs/$name.time"; }
run cpu-quick-stacked  examples/finetune.py
run cpu-quick-vanilla-equal-budget examples/finetune.py --layout vanilla --evaluations 2 \
    --output-dir runs/cpu-quick-vanilla-equal-budget
run cpu-full-stacked   examples/finetune.py --preset cpu-full
# the previous default (item embeddings fixed), and vanilla under it
run cpu-quick-stacked-fixed-items examples/finetune.py --no-train-item-embeddings \
    --output-dir runs/cpu-quick-stacked-fixed-items
run cpu-quick-vanilla  examples/finetune.py --layout vanilla --no-train-item-embeddings
# not rerun under the current presets (docs/results.md reports them from the first recipe):
# run cpu-quick-no-inter examples/finetune.py --ablation no-inter
# run cpu-quick-no-intra examples/finetune.py --ablation no-intra
bash benchmarks/sasrec/setup.sh
python benchmarks/sasrec/export.py --out runs/sasrec --patience 5
/usr/bin/time -v .venv-recbole/bin/python benchmarks/sasrec/train_score.py --out runs/sasrec > runs/sasrec.log 2> runs/sasrec.err
python benchmarks/sasrec/rank.py --out runs/sasrec
python benchmarks/speed_memory.py > runs/speed_memory.md
python benchmarks/item_states.py all --json-out runs/item_states.json > runs/item_states_train_serve.md
python benchmarks/item_states_scaling.py all --json-out runs/item_states_scaling.json > runs/item_states_scaling.md
