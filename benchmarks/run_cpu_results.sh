#!/usr/bin/env bash
# Every CPU number of docs/results.md's item-level sections, one run after another (nothing else running), logs under
# runs/. The token-level sections' runs (the previous rounds) are the same commands with --preset cpu-quick-token-level.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs/final runs/probes
run() { local name=$1; shift; /usr/bin/time -v python "$@" > "runs/$name.log" 2> "runs/$name.time"; }
# SASRec first: every report then shows it beside the model
bash benchmarks/sasrec/setup.sh
python benchmarks/sasrec/export.py --out runs/sasrec --patience 5
/usr/bin/time -v .venv-recbole/bin/python benchmarks/sasrec/train_score.py --out runs/sasrec > runs/sasrec.log 2> runs/sasrec.err
python benchmarks/sasrec/rank.py --out runs/sasrec
S="--sasrec-metrics runs/sasrec/sasrec_metrics.json"
# the final runs, alone: the default (item-level IAM + item ids), the paper's token-level IAM at the same wall clock,
# and the longer preset
run final/cpu-quick-1inter examples/finetune.py $S --output-dir runs/final/cpu-quick-1inter
run final/cpu-quick-token-level-session23 examples/finetune.py --preset cpu-quick-token-level $S \
    --output-dir runs/final/cpu-quick-token-level-session23
# the previous default (second session): 6 layers, 3 of them inter, 3.5 epochs
run final/cpu-quick examples/finetune.py --num-layers 6 --epochs 3.5 $S --output-dir runs/final/cpu-quick-stacked
run final/cpu-quick-token-level examples/finetune.py --preset cpu-quick-token-level $S \
    --output-dir runs/cpu-quick-token-level-stacked
run final/cpu-full examples/finetune.py --preset cpu-full $S --output-dir runs/final/cpu-full
# the same LLM without IAM at the default's wall clock (the paper's token-level recipe, 172 steps: previous round's fit)
run final/vanilla-equal-wall examples/finetune.py --preset cpu-quick-token-level --layout vanilla --max-steps 172 \
    --evaluations 2 $S --output-dir runs/final/vanilla-equal-wall
for folder in runs/final/cpu-quick-1inter runs/probes/p31-text-6intra-1inter-e8 runs/final/cpu-quick-stacked \
    runs/final/cpu-full runs/cpu-quick-token-level-stacked; do
    python benchmarks/personalisation.py "$folder/checkpoint" --json-out "$folder/personalisation.json"
done
# the default and cpu-full as they were before the recipe dropped the popularity prior (the previous round's finals)
run final/cpu-quick-prior examples/finetune.py --num-layers 6 --epochs 3.5 --init-item-prior $S \
    --output-dir runs/final/cpu-quick-prior
run final/cpu-full-prior examples/finetune.py --preset cpu-full --epochs 6 --init-item-prior $S \
    --output-dir runs/final/cpu-full-prior
# validation-only probes (their test numbers are not read); "--epochs 4": the preset had 4 epochs when they ran,
# "--init-item-prior": the recipe started the per-item bias at the popularity prior until p16-p20
probe() { local name=$1; shift; run "probes/$name" examples/finetune.py --output-dir "runs/probes/$name" "$@"; }
# p1-p26 ran when cpu-quick was 6 layers (3 intra, 3 inter) for 3.5 epochs: a later flag wins over these
before6() { local name=$1; shift; probe "$name" --num-layers 6 --epochs 3.5 "$@"; }
before6 p1-item-ids --epochs 4 --init-item-prior
before6 p2-text-only --epochs 4 --no-item-id-embeddings --init-item-prior
before6 p3-cosine --epochs 4 --adapter-scoring cosine --init-item-prior
before6 p4-renumbered --epochs 4 --item-token-positions renumbered --init-item-prior
before6 p5-epochs6 --epochs 6 --init-item-prior
before6 p6-ids-lr3e-3 --epochs 4 --item-id-embedding-learning-rate 3e-3 --init-item-prior
before6 p7-cold --epochs 4 --cold-items 0.2 --init-item-prior
before6 p8-cold-text --epochs 4 --cold-items 0.2 --score-items-from-text --item-residual-dropout 0.3 --init-item-prior
before6 p10-12layers --num-layers 12 --freeze-bottom-layers 6 --init-item-prior
before6 p11-history200 --max-history 200 --max-length 4000 --batch-size 4 --init-item-prior
before6 p14-iddrop0.3-e6 --epochs 6 --item-id-dropout 0.3 --init-item-prior
before6 p15-constant --lr-scheduler-type constant_with_warmup --init-item-prior
before6 p16-no-prior --no-init-item-prior
before6 p17-lr-x2 --learning-rate 6e-4 --adapter-learning-rate 2e-3 --init-item-prior
before6 p18-no-prior-e6 --epochs 6 --no-init-item-prior
before6 p19-seed1 --seed 1 --init-item-prior
before6 p20-no-prior-seed1 --seed 1 --no-init-item-prior
before6 p21-no-prior-e6-wd0.1 --epochs 6 --no-init-item-prior --weight-decay 0.1
before6 p22-no-prior-e10 --epochs 10 --no-init-item-prior
before6 p23-cold-no-prior --epochs 4 --cold-items 0.2 --no-init-item-prior
before6 p24-cold-seed1 --cold-items 0.2 --seed 1
before6 p25-tied --tie-item-id-embeddings
before6 p26-text-only-no-prior --no-item-id-embeddings
# third session: the depth of the inter half, dropout before the adapter, deeper intra layers
probe p27-1inter --num-layers 4 --layer-types intra,intra,intra,inter --epochs 3.5
probe p28-2inter --num-layers 5 --layer-types intra,intra,intra,inter,inter --epochs 3.5
probe p29-1inter-e8 --num-layers 4 --layer-types intra,intra,intra,inter --epochs 8
probe p32-1inter-e5 --num-layers 4 --layer-types intra,intra,intra,inter --epochs 5
probe p33-2inter-e5 --num-layers 5 --layer-types intra,intra,intra,inter,inter --epochs 5
probe p34-1inter-e8-drop0.3 --num-layers 4 --layer-types intra,intra,intra,inter --epochs 8 --adapter-dropout 0.3
probe p35-1inter-e5-drop0.2 --num-layers 4 --layer-types intra,intra,intra,inter --epochs 5 --adapter-dropout 0.2
probe p36-6intra-1inter-e5 --num-layers 7 --freeze-bottom-layers 6 --layer-types intra,intra,intra,intra,intra,intra,inter --epochs 5
probe p30-text-1inter-e8 --no-item-id-embeddings --num-layers 4 --layer-types intra,intra,intra,inter --epochs 8
probe p31-text-6intra-1inter-e8 --no-item-id-embeddings --num-layers 7 --freeze-bottom-layers 6 \
    --layer-types intra,intra,intra,intra,intra,intra,inter --epochs 8
probe p37-text-12intra-1inter-e6 --no-item-id-embeddings --num-layers 13 --freeze-bottom-layers 12 \
    --layer-types "$(python -c 'print(",".join(["intra"] * 12 + ["inter"]))')" --epochs 6
probe p40-6intra-3inter-e10 --num-layers 9 --freeze-bottom-layers 6 --layer-types intra,intra,intra,intra,intra,intra,inter,inter,inter --epochs 10
probe p38-cold-6intra-1inter --cold-items 0.2 --num-layers 7 --freeze-bottom-layers 6 --layer-types intra,intra,intra,intra,intra,intra,inter --epochs 5
# fourth session: regularising cpu-full (p43 is cpu-full itself at 1 thread: it reproduces p22 exactly)
probe p43-cpu-full --preset cpu-full
probe p44-cpu-full-ids64 --preset cpu-full --item-id-embedding-size 64
probe p45-cpu-full-attn0.1 --preset cpu-full --attention-dropout 0.1
probe p46-cpu-full-attn0.3 --preset cpu-full --attention-dropout 0.3
# cold items: SASRec on the same cold split, then both on the new-arrivals shelf and the offset trade-off
python benchmarks/sasrec/export.py --cold-items 0.2 --seed 0 --out runs/sasrec-cold0.2 --patience 5
/usr/bin/time -v .venv-recbole/bin/python benchmarks/sasrec/train_score.py --out runs/sasrec-cold0.2 \
    > runs/sasrec-cold0.2.log 2> runs/sasrec-cold0.2.err
python benchmarks/sasrec/rank.py --out runs/sasrec-cold0.2 --cold-items 0.2 --seed 0
python benchmarks/cold_items.py runs/probes/p7-cold/checkpoint --sasrec runs/sasrec-cold0.2 \
    --json-out runs/cold_items.json > runs/cold_items.md
# the same with the other seed (its own cold items), the current recipe
python benchmarks/sasrec/export.py --cold-items 0.2 --seed 1 --out runs/sasrec-cold0.2-seed1 --patience 5
/usr/bin/time -v .venv-recbole/bin/python benchmarks/sasrec/train_score.py --out runs/sasrec-cold0.2-seed1 \
    > runs/sasrec-cold0.2-seed1.log 2> runs/sasrec-cold0.2-seed1.err
python benchmarks/sasrec/rank.py --out runs/sasrec-cold0.2-seed1 --cold-items 0.2 --seed 1
python benchmarks/cold_items.py runs/probes/p24-cold-seed1/checkpoint --sasrec runs/sasrec-cold0.2-seed1 \
    --json-out runs/cold_items_seed1.json > runs/cold_items_seed1.md
# the text-only model with 6 intra layers on the seed-0 cold split (third session), against the same SASRec
run probes/p41-cold-text-6intra examples/finetune.py --output-dir runs/probes/p41-cold-text-6intra --cold-items 0.2 \
    --no-item-id-embeddings --num-layers 7 --freeze-bottom-layers 6 --layer-types intra,intra,intra,intra,intra,intra,inter \
    --epochs 8
python benchmarks/cold_items.py runs/probes/p41-cold-text-6intra/checkpoint --sasrec runs/sasrec-cold0.2 \
    --json-out runs/cold_items_text6.json > runs/cold_items_text6.md
run probes/p42-cold-text-6intra-seed1 examples/finetune.py --output-dir runs/probes/p42-cold-text-6intra-seed1 \
    --cold-items 0.2 --seed 1 --no-item-id-embeddings --num-layers 7 --freeze-bottom-layers 6 \
    --layer-types intra,intra,intra,intra,intra,intra,inter --epochs 8
python benchmarks/cold_items.py runs/probes/p42-cold-text-6intra-seed1/checkpoint --sasrec runs/sasrec-cold0.2-seed1 \
    --json-out runs/cold_items_text6_seed1.json > runs/cold_items_text6_seed1.md
# equal steps on the token-level recipe
probe p12-tl-recipe-item --preset cpu-quick-token-level --num-item-tokens 1
probe p13-tl-recipe-item-ids --preset cpu-quick-token-level --num-item-tokens 1 --item-id-embeddings
# MovieLens-1M: IAM and SASRec (capped at 3 epochs)
run cpu-ml-1m-stacked examples/finetune.py --preset cpu-ml-1m --output-dir runs/cpu-ml-1m-stacked
# the same LLM without IAM on ML-1M: the token-level recipe, its steps sized so the whole run (two token-level
# evaluations of 6,040 users included) takes at least the IAM preset's wall clock (fifth session: 1:09 against 0:55)
run vanilla-ml-1m-equal-wall examples/finetune.py --preset cpu-quick-token-level --dataset ml-1m --layout vanilla \
    --max-steps 1650 --evaluations 1 --output-dir runs/vanilla-ml-1m-equal-wall
# re-choosing the ML-1M recipe at 1 epoch (validation only)
probe p47-ml1m-e1 --preset cpu-ml-1m --epochs 1 --evaluations 2
probe p48-ml1m-e1-no-prior --preset cpu-ml-1m --epochs 1 --evaluations 2 --no-init-item-prior
probe p49-ml1m-e1-no-prior-1inter --preset cpu-ml-1m --epochs 1 --evaluations 2 --no-init-item-prior --num-layers 4 \
    --layer-types intra,intra,intra,inter
python benchmarks/sasrec/export.py --dataset ml-1m --out runs/sasrec-ml-1m --patience 5 --epochs 3
/usr/bin/time -v .venv-recbole/bin/python benchmarks/sasrec/train_score.py --out runs/sasrec-ml-1m \
    > runs/sasrec-ml-1m.log 2> runs/sasrec-ml-1m.err
python benchmarks/sasrec/rank.py --out runs/sasrec-ml-1m --dataset ml-1m
python benchmarks/curves.py runs/final/cpu-quick-stacked runs/cpu-quick-token-level-stacked runs/probes/p1-item-ids \
    runs/probes/p2-text-only --out docs/images/curves_cpu_quick.png --title "ml-100k; 6 layers; the ~6-minute budget"
python benchmarks/speed_memory.py > runs/speed_memory.md
python benchmarks/item_states.py train --steps 8 --warmup-steps 2 --json-out runs/item_states.json > runs/item_states.md
python benchmarks/item_states.py serve --json-out runs/item_states_serve.json > runs/item_states_serve.md
python benchmarks/item_states.py memory --json-out runs/item_states_memory.json > runs/item_states_memory.md
python benchmarks/item_states_scaling.py all --json-out runs/item_states_scaling.json > runs/item_states_scaling.md
