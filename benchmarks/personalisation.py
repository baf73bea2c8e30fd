"""How personal a trained model's top-10 lists are: their overlap with popularity's and the catalog they cover.

    python benchmarks/personalisation.py runs/cpu-quick-stacked/checkpoint            # test users
    python benchmarks/personalisation.py runs/cpu-quick-stacked/checkpoint --split valid --json-out runs/p.json

For every user of the split, the model's top-10 (history items excluded, as in the evaluation) and popularity's
top-10 over the same catalog with the same exclusion (popularity counted as the evaluation counts it). Prints the
mean share of a user's top-10 that popularity's top-10 also holds, and coverage@10: how many distinct catalog items
appear in at least one user's top-10. A model that learned nothing personal has overlap near 100% and coverage near
popularity's own.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from transformers_iam.core.ranking import exclude_items
from transformers_iam.experiments.build import eval_subset
from transformers_iam.experiments.evaluate import load_checkpoint_run
from transformers_iam.recsys.baselines import popularity_scores

K = 10


def top_lists(checkpoint_dir: str, split: str, batch_size: int) -> dict:
    run, data, model, collator = load_checkpoint_run(checkpoint_dir)
    dataset = eval_subset(data.split(split), run.data)  # the users the run evaluated (all, but in a smoke run)
    catalog = model.catalog  # a cold-item run's has its cold items last (LeaveOneOutData.catalog_after_training)
    popular = popularity_scores(data.popularity_sequences(split), catalog)
    model_lists, popularity_lists = [], []
    started = time.perf_counter()
    for start in range(0, len(dataset), batch_size):
        rows = [dataset[index] for index in range(start, min(start + batch_size, len(dataset)))]
        batch = collator(rows)
        # the collator's history indices: what the evaluation excludes (recsys/evaluation.py reads the same field)
        excluded = batch["history_item_indices"] if run.data.exclude_history else None
        with torch.no_grad():
            model_lists += model.recommend(**batch, k=K, exclude_item_ids=excluded).indices.tolist()
        scores = popular.expand(len(rows), -1)
        if excluded is not None:
            scores = exclude_items(scores, excluded)
        popularity_lists += scores.topk(K, dim=-1).indices.tolist()
    overlap = [len(set(mine) & set(theirs)) / K for mine, theirs in zip(model_lists, popularity_lists)]
    targets = catalog.indices_of(dataset["target"])
    return {
        "checkpoint": checkpoint_dir,
        "split": split,
        "users": len(model_lists),
        "catalog_items": len(catalog),
        "mean_overlap_with_popularity@10": sum(overlap) / len(overlap),
        "coverage@10": len({item for items in model_lists for item in items}),
        "popularity_coverage@10": len({item for items in popularity_lists for item in items}),
        # the evaluation's HR@10 recomputed from these lists (metrics.json's, ties aside): a check on this script
        "hr@10": sum(target in items for target, items in zip(targets, model_lists)) / len(targets),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint folder that examples/finetune.py wrote")
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    result = top_lists(args.checkpoint, args.split, args.batch_size)
    print(
        f"{result['checkpoint']}, {result['split']} ({result['users']} users, history excluded): the model's top-10 "
        f"shares {result['mean_overlap_with_popularity@10']:.1%} of popularity's on average; coverage@10 "
        f"{result['coverage@10']} of {result['catalog_items']} items (popularity's lists: "
        f"{result['popularity_coverage@10']}); HR@10 of these lists {result['hr@10']:.4f}; {result['seconds']} s"
    )
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    main()
