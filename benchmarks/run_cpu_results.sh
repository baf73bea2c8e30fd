#!/usr/bin/env bash
# Every CPU number of docs/results.md, one run after another (nothing else running), logs under runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs
run() { local name=$1; shift; /usr/bin/time -v python "$@" > "runs/$name.log" 2> "runs/$name.time"; }
run cpu-quick-stacked  examples/finetune.py
run cpu-quick-vanilla  examples/finetune.py --layout vanilla
run cpu-quick-no-inter examples/finetune.py --ablation no-inter
run cpu-quick-no-intra examples/finetune.py --ablation no-intra
python benchmarks/speed_memory.py > runs/speed_memory.md
python benchmarks/item_states.py all --json-out runs/item_states.json > runs/item_states_train_serve.md
python benchmarks/item_states_scaling.py all --json-out runs/item_states_scaling.json > runs/item_states_scaling.md
