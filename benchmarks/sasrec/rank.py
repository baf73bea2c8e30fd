"""Rank SASRec's dumped scores with our metric code (same split, same ties rule, same history exclusion).

    python benchmarks/sasrec/rank.py                                   # runs/sasrec (ml-100k)
    python benchmarks/sasrec/rank.py --dataset ml-1m --cold-items 0.2  # runs/sasrec-ml-1m-cold0.2

(in the project venv, with the flags export.py was given). Items RecBole has no id for (in none of the exported
files) are scored -inf; cold items have ids and are scored by their embedding (export.py says how it was trained).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from export import add_split_arguments, default_out, item_tokens, load_split  # noqa: E402

from transformers_iam.recsys.metrics import (  # noqa: E402
    format_metrics_table,
    metrics_from_ranks,
    protocol_line,
    target_ranks,
)

# what makes two splits the same (experiments/report.py: find_sasrec_reference matches a run on these too)
SPLIT_KEYS = ("name", "users", "items", "interactions", "cold_items")


def sasrec_scores(out: str, dumped: dict, catalog, split: str) -> tuple[list[str], list[str], torch.Tensor]:
    """SASRec's dumped scores of ``split`` (``<out>/scores_<split>.npy``) in ``catalog``'s columns: the users and
    targets of its rows (RecBole's order) and a ``(users, items)`` tensor; items RecBole has no id for get -inf."""
    tokens = item_tokens(catalog)
    item_of_token = dict(zip(tokens, catalog.item_ids))
    recbole_index = {token: index for index, token in enumerate(dumped["item_tokens"])}
    missing = [index for index, token in enumerate(tokens) if token not in recbole_index]
    columns = np.array([recbole_index.get(token, 0) for token in tokens])
    scores = torch.from_numpy(np.load(os.path.join(out, f"scores_{split}.npy"))[:, columns])
    if missing:
        scores[:, missing] = float("-inf")
    targets = [item_of_token[token] for token in dumped[f"{split}_targets"]]
    return dumped[f"{split}_users"], targets, scores


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    add_split_arguments(parser)
    parser.add_argument("--keep-history", action="store_true")
    args = parser.parse_args(argv)
    out = args.out or default_out(args.dataset, args.cold_items, args.max_history)
    with open(os.path.join(out, "sasrec_scores.json"), encoding="utf-8") as handle:
        dumped = json.load(handle)
    data = load_split(args.dataset, args.cold_items, args.seed, args.max_history)
    exported = os.path.join(out, "split.json")
    if os.path.isfile(exported):  # the scores are of the exported split: the flags must name the same one
        with open(exported, encoding="utf-8") as handle:
            recorded = json.load(handle)
        differing = [key for key in SPLIT_KEYS if recorded.get(key) != json.loads(json.dumps(data.statistics[key]))]
        if differing:
            raise SystemExit(
                f"{exported} records another split than --dataset/--cold-items/--seed give ({', '.join(differing)})"
            )
    catalog = data.catalog
    tokens = item_tokens(catalog)
    recbole_index = {token: index for index, token in enumerate(dumped["item_tokens"])}
    missing = [item for item, token in zip(catalog.item_ids, tokens) if token not in recbole_index]
    if missing:
        print(f"{len(missing)} catalog items unknown to RecBole (in no exported file) get -inf: {missing[:10]}")
    if data.cold_items:
        known = sum(tokens[catalog.index_of(item)] in recbole_index for item in data.cold_items)
        print(
            f"cold items: {known} of {len(data.cold_items)} have a RecBole id (they occur in validation or test rows) "
            "and are scored by their initial embedding (train_score.py leaves them out of the training softmax); the "
            "others get -inf"
        )
    results, ranks_by_user = {}, {}
    for split in ("valid", "test"):
        users, targets, scores = sasrec_scores(out, dumped, catalog, split)
        expected = data.split(split)
        truth = dict(zip(expected["user_id"], expected["target"]))
        mismatched = [user for user, target in zip(users, targets) if truth.get(user) != target]
        if mismatched or len(users) != len(truth):
            raise SystemExit(f"{split}: RecBole's rows do not match our split (users {mismatched[:5]})")
        visible = data.visible_sequences(split)
        history = [catalog.indices_of(visible[user]) for user in users] if not args.keep_history else None
        ranks = target_ranks(scores, torch.tensor(catalog.indices_of(targets)), history)
        results[f"SASRec, {split}"] = metrics_from_ranks(ranks)
        # per-user ranks, for paired comparisons (benchmarks/paired.py) and the runs' figure, report and breakdowns
        ranks_by_user[split] = {"model": {str(user): int(rank) for user, rank in zip(users, ranks.tolist())}}
    print(protocol_line(not args.keep_history, "valid and test"))
    print(format_metrics_table(results))
    print("RecBole's own test metrics:", dumped["recbole_test"])
    # the split these ranks are on (a run only draws SASRec when it matches, cold items included) and how long
    # SASRec trained
    results["dataset"] = data.statistics
    results["training"] = dumped.get("training", {})
    results["ranks"] = ranks_by_user
    name = "sasrec_metrics_history_kept.json" if args.keep_history else "sasrec_metrics.json"
    with open(os.path.join(out, name), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)
    return results


if __name__ == "__main__":
    main()
