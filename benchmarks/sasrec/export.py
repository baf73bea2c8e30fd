"""Export our leave-one-out split of ml-100k to RecBole benchmark files, plus the SASRec config.

    python benchmarks/sasrec/export.py --out runs/sasrec        # in the project venv

Writes runs/sasrec/ml-100k-loo/ml-100k-loo.{train,valid,test}.inter with columns
user_id, item_id_list (history, oldest first), item_id (target): exactly our training
prefixes, validation and test examples, so RecBole does no splitting of its own (ml-100k has
many timestamp ties; RecBole's own split does not match a stable-sort leave-one-out).
"""

from __future__ import annotations

import argparse
import json
import os

from transformers_iam.recsys.readers import load_recbole_atomic, movielens_100k_directory

DATASET = "ml-100k-loo"
MAX_HISTORY = 50


def sasrec_config(data_path: str, epochs: int, device: str, patience: int = 10) -> str:
    # RecBole's default sequential config samples negatives; CE loss needs train_neg_sample_args: ~
    return f"""# SASRec on our leave-one-out split of ml-100k (RecBole 1.2.1)
data_path: {data_path}
dataset: {DATASET}
benchmark_filename: [train, valid, test]
USER_ID_FIELD: user_id
ITEM_ID_FIELD: item_id
load_col:
  inter: [user_id, item_id_list, item_id]
MAX_ITEM_LIST_LENGTH: {MAX_HISTORY}
train_neg_sample_args: ~
loss_type: CE
n_layers: 2
n_heads: 2
hidden_size: 64
inner_size: 256
hidden_dropout_prob: 0.5
attn_dropout_prob: 0.5
hidden_act: gelu
layer_norm_eps: 1.0e-12
initializer_range: 0.02
# trained to convergence: validation NDCG@10 after every epoch, stop after `stopping_step` epochs without a better
# one, keep the best; `epochs` is only a cap
epochs: {epochs}
eval_step: 1
train_batch_size: 256
eval_batch_size: 256
learning_rate: 0.001
stopping_step: {patience}
eval_args:
  group_by: user
  order: TO
  mode: full
metrics: [Hit, NDCG, MRR]
topk: [5, 10, 20]
valid_metric: NDCG@10
device: {device}
use_gpu: {str(device == "cuda").lower()}
seed: 2020
reproducibility: true
show_progress: true
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="runs/sasrec")
    parser.add_argument("--epochs", type=int, default=300, help="a cap: early stopping ends the run")
    parser.add_argument("--patience", type=int, default=10, help="epochs without a better validation NDCG@10 (>= 5)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    if args.patience < 5:
        parser.error("--patience must be >= 5: validation NDCG@10 is noisy over 943 users")
    data = load_recbole_atomic(movielens_100k_directory(), max_history=MAX_HISTORY, train_examples_per_user=None)
    print(data.describe())
    folder = os.path.join(args.out, DATASET)
    os.makedirs(folder, exist_ok=True)
    for split, dataset in (("train", data.train), ("valid", data.valid), ("test", data.test)):
        with open(os.path.join(folder, f"{DATASET}.{split}.inter"), "w") as handle:
            handle.write("user_id:token\titem_id_list:token_seq\titem_id:token\n")
            for row in dataset:
                history = row["history"][-MAX_HISTORY:]
                handle.write(f"{row['user_id']}\t{' '.join(history)}\t{row['target']}\n")
    with open(os.path.join(args.out, "sasrec.yaml"), "w") as handle:
        handle.write(sasrec_config(os.path.abspath(args.out), args.epochs, args.device, args.patience))
    with open(os.path.join(args.out, "split.json"), "w") as handle:
        json.dump(data.statistics, handle, indent=1)
    print(f"wrote {folder} and {os.path.join(args.out, 'sasrec.yaml')}")


if __name__ == "__main__":
    main()
