#!/usr/bin/env bash
# The commands behind every CPU number of docs/results.md (the benchmark page), one run after another with nothing
# else running; logs under runs/. The probes that chose the presets ran with the flags of their day: docs/notebook.md
# lists them with the commit that had those flags.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs/final
run() { local name=$1; shift; /usr/bin/time -v python "$@" > "runs/$name.log" 2> "runs/$name.time"; }

# SASRec (RecBole) on exactly our splits: trained to convergence (validation NDCG@10, patience 5), resumable
sasrec() { bash benchmarks/sasrec/run.sh "$@"; }
sasrec runs/sasrec
S="--sasrec_metrics runs/sasrec/sasrec_metrics.json"

# ml-100k: the default, the longer preset, the paper's token-level IAM, the same LLM without IAM
run final/cpu-quick-1inter examples/finetune.py $S --output_dir runs/final/cpu-quick-1inter
run final/cpu-full examples/finetune.py --preset cpu-full $S --output_dir runs/final/cpu-full
run final/cpu-quick-token-level examples/finetune.py --preset cpu-quick-token-level $S \
    --output_dir runs/final/cpu-quick-token-level
run final/vanilla-equal-wall examples/finetune.py --preset cpu-quick-token-level --iam_layout vanilla --max_steps 172 \
    --evaluations 2 $S --output_dir runs/final/vanilla-equal-wall
# the text-only model: no per-item input vector, items read through 6 frozen intra layers
run final/text-6intra examples/finetune.py --use_item_id_embeddings false --num_backbone_layers 7 \
    --freeze_bottom_layers 6 --iam_layer_types intra intra intra intra intra intra inter --num_train_epochs 8 $S \
    --output_dir runs/final/text-6intra
for folder in runs/final/cpu-quick-1inter runs/final/cpu-full runs/final/cpu-quick-token-level; do
    python benchmarks/personalisation.py "$folder/checkpoint" --json-out "$folder/personalisation.json"
done

# cold items (20% of the items never seen in training), two seeds: IAM, the text-only model and SASRec
for seed in 0 1; do
    tag=cold0.2$([ "$seed" = 1 ] && echo -seed1)
    sasrec "runs/sasrec-$tag" --cold-items 0.2 --seed "$seed"
    run "final/$tag" examples/finetune.py --cold_items 0.2 --seed "$seed" --output_dir "runs/final/$tag"
    python benchmarks/cold_items.py "runs/final/$tag/checkpoint" --sasrec "runs/sasrec-$tag" \
        --json-out "runs/final/$tag/cold_items.json" > "runs/final/$tag/cold_items.md"
done

# MovieLens-1M: IAM, SASRec, the same LLM without IAM given at least IAM's wall clock
sasrec runs/sasrec-ml-1m --dataset ml-1m
run cpu-ml-1m-stacked examples/finetune.py --preset cpu-ml-1m --output_dir runs/cpu-ml-1m-stacked
run vanilla-ml-1m-equal-wall examples/finetune.py --preset cpu-quick-token-level --dataset ml-1m \
    --iam_layout vanilla --max_steps 1650 --evaluations 1 --output_dir runs/vanilla-ml-1m-equal-wall

# speed and memory (alone): IAM against the plain backbone, with and without the item-state cache
python benchmarks/speed_memory.py > runs/speed_memory.md
python benchmarks/item_states.py train --steps 8 --warmup-steps 2 --json-out runs/item_states.json > runs/item_states.md
python benchmarks/item_states.py serve --json-out runs/item_states_serve.json > runs/item_states_serve.md
python benchmarks/item_states.py memory --json-out runs/item_states_memory.json > runs/item_states_memory.md
python benchmarks/item_states_scaling.py all --json-out runs/item_states_scaling.json > runs/item_states_scaling.md
