"""Rank SASRec's dumped scores with our metric code (same split, same ties rule, same history exclusion).

python benchmarks/sasrec/rank.py --out runs/sasrec     # in the project venv
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch

from transformers_iam.recsys.metrics import format_metrics_table, metrics_from_ranks, protocol_line, target_ranks
from transformers_iam.recsys.readers import load_recbole_atomic, movielens_100k_directory


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="runs/sasrec")
    parser.add_argument("--keep-history", action="store_true")
    args = parser.parse_args()
    with open(os.path.join(args.out, "sasrec_scores.json")) as handle:
        dumped = json.load(handle)
    data = load_recbole_atomic(movielens_100k_directory(), max_history=None, train_examples_per_user=None)
    catalog = data.catalog
    recbole_index = {token: index for index, token in enumerate(dumped["item_tokens"])}
    missing = [item for item in catalog.item_ids if item not in recbole_index]
    if missing:
        print(f"{len(missing)} catalog items unknown to RecBole get -inf: {missing[:10]}")
    columns = np.array([recbole_index.get(item, 0) for item in catalog.item_ids])
    results, ranks_by_user = {}, {}
    for split in ("valid", "test"):
        raw = np.load(os.path.join(args.out, f"scores_{split}.npy"))
        scores = torch.from_numpy(raw[:, columns])
        if missing:
            scores[:, [catalog.index_of(item) for item in missing]] = float("-inf")
        users = dumped[f"{split}_users"]
        expected = data.split(split)
        truth = dict(zip(expected["user_id"], expected["target"]))
        mismatched = [u for u, t in zip(users, dumped[f"{split}_targets"]) if truth[u] != t]
        if mismatched or len(users) != len(truth):
            raise SystemExit(f"{split}: RecBole's rows do not match our split (users {mismatched[:5]})")
        visible = data.visible_sequences(split)
        history = [catalog.indices_of(visible[u]) for u in users] if not args.keep_history else None
        ranks = target_ranks(scores, torch.tensor(catalog.indices_of(dumped[f"{split}_targets"])), history)
        results[f"SASRec, {split}"] = metrics_from_ranks(ranks)
        # per-user ranks, for paired comparisons (benchmarks/paired.py) and the runs' figure and report
        ranks_by_user[split] = {"model": {str(user): int(rank) for user, rank in zip(users, ranks.tolist())}}
    print(protocol_line(not args.keep_history, "valid and test"))
    print(format_metrics_table(results))
    print("RecBole's own test metrics:", dumped["recbole_test"])
    # the split these ranks are on (a run only draws SASRec when it matches) and how long SASRec trained
    results["dataset"] = data.statistics
    results["training"] = dumped.get("training", {})
    results["ranks"] = ranks_by_user
    name = "sasrec_metrics_history_kept.json" if args.keep_history else "sasrec_metrics.json"
    with open(os.path.join(args.out, name), "w") as handle:
        json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
