"""Export our leave-one-out split to RecBole benchmark files, plus the SASRec config.

    python benchmarks/sasrec/export.py                                   # ml-100k -> runs/sasrec
    python benchmarks/sasrec/export.py --dataset ml-1m                   # -> runs/sasrec-ml-1m
    python benchmarks/sasrec/export.py --dataset ml-1m --cold-items 0.2  # -> runs/sasrec-ml-1m-cold0.2

(in the project venv). Writes <out>/<dataset>-loo/<dataset>-loo.{train,valid,test}.inter with columns user_id,
item_id_list (history, oldest first), item_id (target): exactly our training prefixes, validation and test examples,
so RecBole does no splitting of its own (ml-100k and ml-1m have many timestamp ties; RecBole's own split does not
match a stable-sort leave-one-out). The main job's `--dataset`, `--cold-items` and `--seed` pick the same split.

Under --cold-items the training rows come from each user's training sequence without the cold items, and the
validation and test rows are those of the plain split. RecBole builds its item vocabulary over the three files, so
a cold item (it occurs in validation and test rows only) has a RecBole id and an embedding: never a training target
nor in a training history. SASRec's loss is a softmax over every item (CE), so stock RecBole would use cold items
as negatives at every step and push their scores down; train_score.py leaves them out of that softmax (they are not
in the catalog while a model trains), so they keep their initial embeddings. An item in no file at all has no
RecBole id: rank.py scores it -inf.
Those are the items without interactions (ML-1M has 177) and, under --cold-items, the cold items that are nobody's
validation or test target and occur only deeper than the 50 newest items of a history (rank.py prints how many: 30
of 336 on ml-100k with --cold-items 0.2 --seed 3, 28 of 741 on ml-1m at seed 0). Those are nobody's target, so no
target's rank changes by more than their count. cold_items.json lists the cold items and their RecBole tokens.

Item tokens: the item ids, unless an id holds whitespace or a quote (ML-1M's ids are titles, "Toy Story (1995)"):
then every item's token is its catalog index, since RecBole splits item_id_list on spaces and reads the files with
pandas' quoting. rank.py maps the tokens back with the same item_tokens().
"""

from __future__ import annotations

import argparse
import json
import os
import re

from transformers_iam.core.catalog import ItemCatalog
from transformers_iam.experiments.report import data_tag
from transformers_iam.recsys.data import LeaveOneOutData
from transformers_iam.recsys.readers import DATASETS, load_dataset

MAX_HISTORY = 50
_PLAIN_TOKEN = re.compile(r"[^\s\"']+")


def recbole_dataset_name(dataset: str) -> str:
    """The RecBole data set (its folder and file names): ``ml-100k-loo``, ``ml-1m-loo``."""
    return f"{dataset}-loo"


def default_out(dataset: str, cold_items: float | None, max_history: int = MAX_HISTORY) -> str:
    """Where the main job looks for SASRec by default (experiments/report.py: sasrec_metrics_path); another history
    length than the main job's 50 gets a folder of its own (``runs/sasrec-ml-1m-h200``)."""
    return "runs/sasrec" + data_tag(dataset, cold_items) + ("" if max_history == MAX_HISTORY else f"-h{max_history}")


def item_tokens(catalog: ItemCatalog) -> list[str]:
    """Each catalog item's RecBole token, in catalog order: its id, or its catalog index for every item when any id
    is not a plain token (whitespace, quotes).

    Example:
        >>> item_tokens(ItemCatalog(["1", "2"], ["A", "B"])), item_tokens(ItemCatalog(["Heat (1995)", "x"], ["A", "B"]))
        (['1', '2'], ['0', '1'])
    """
    if all(_PLAIN_TOKEN.fullmatch(item_id) for item_id in catalog.item_ids):
        return list(catalog.item_ids)
    return [str(index) for index in range(len(catalog))]


def load_split(
    dataset: str, cold_items: float | None = None, seed: int = 0, max_history: int = MAX_HISTORY
) -> LeaveOneOutData:
    """The split SASRec trains on: every training prefix, histories of up to ``max_history`` items (what RecBole
    reads), validation and test rows whole; under ``cold_items`` the main job's cold items (same share, same seed)."""
    return load_dataset(
        dataset, max_history=max_history, train_examples_per_user=None, cold_items=cold_items, seed=seed
    )


def sasrec_config(
    data_path: str,
    epochs: int,
    device: str,
    patience: int = 10,
    dataset: str = "ml-100k",
    max_history: int = MAX_HISTORY,
) -> str:
    # RecBole's default sequential config samples negatives; CE loss needs train_neg_sample_args: ~
    return f"""# SASRec on our leave-one-out split of {dataset} (RecBole 1.2.1)
data_path: {data_path}
dataset: {recbole_dataset_name(dataset)}
benchmark_filename: [train, valid, test]
USER_ID_FIELD: user_id
ITEM_ID_FIELD: item_id
load_col:
  inter: [user_id, item_id_list, item_id]
# one id per item in both fields: without it RecBole remaps the history field apart from the target field, so a
# history item is embedded as another item (1,287 of ml-100k's 1,680 tokens got another id) and an item that occurs
# only in histories (a cold item) gets an id past the embedding table
alias_of_item_id: [item_id_list]
MAX_ITEM_LIST_LENGTH: {max_history}
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


def add_split_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that pick the split, shared with rank.py (the main job's --dataset, --cold-items, --seed)."""
    parser.add_argument("--dataset", default="ml-100k", choices=sorted(DATASETS))
    parser.add_argument("--cold-items", type=float, help="the main job's --cold-items share (default: none)")
    parser.add_argument("--seed", type=int, default=0, help="the main job's --seed: it draws the cold items")
    parser.add_argument("--max-history", type=int, default=MAX_HISTORY, help="items of history SASRec reads (50)")
    parser.add_argument(
        "--out", help="default: runs/sasrec, runs/sasrec-ml-1m, runs/sasrec-ml-1m-cold0.2, runs/sasrec-ml-1m-h200, ..."
    )


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser()
    add_split_arguments(parser)
    parser.add_argument("--epochs", type=int, default=300, help="a cap: early stopping ends the run")
    parser.add_argument("--patience", type=int, default=10, help="epochs without a better validation NDCG@10 (>= 5)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)
    if args.patience < 5:
        parser.error("--patience must be >= 5: validation NDCG@10 is noisy over a few thousand users")
    if args.max_history < 1:
        parser.error(f"--max-history must be >= 1, got {args.max_history}")
    out = args.out or default_out(args.dataset, args.cold_items, args.max_history)
    data = load_split(args.dataset, args.cold_items, args.seed, args.max_history)
    print(data.describe())
    tokens = dict(zip(data.catalog.item_ids, item_tokens(data.catalog)))
    name = recbole_dataset_name(args.dataset)
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    for split, dataset in (("train", data.train), ("valid", data.valid), ("test", data.test)):
        with open(os.path.join(folder, f"{name}.{split}.inter"), "w", encoding="utf-8") as handle:
            handle.write("user_id:token\titem_id_list:token_seq\titem_id:token\n")
            for batch in dataset.iter(batch_size=10_000):  # column batches: 982k ML-1M rows one by one are slow
                for user, history, target in zip(batch["user_id"], batch["history"], batch["target"]):
                    history = " ".join(tokens[item] for item in history[-args.max_history :])
                    handle.write(f"{user}\t{history}\t{tokens[target]}\n")
    with open(os.path.join(out, "sasrec.yaml"), "w", encoding="utf-8") as handle:
        handle.write(
            sasrec_config(os.path.abspath(out), args.epochs, args.device, args.patience, args.dataset, args.max_history)
        )
    with open(os.path.join(out, "split.json"), "w", encoding="utf-8") as handle:
        json.dump(data.statistics, handle, indent=1)
    if data.cold_items:
        with open(os.path.join(out, "cold_items.json"), "w", encoding="utf-8") as handle:
            cold = {"items": list(data.cold_items), "tokens": [tokens[item] for item in data.cold_items]}
            json.dump(cold, handle, indent=1, ensure_ascii=False)
    print(f"wrote {folder} and {os.path.join(out, 'sasrec.yaml')}")
    return out


if __name__ == "__main__":
    main()
