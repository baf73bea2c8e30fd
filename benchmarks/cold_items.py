"""Cold items after training, three views from one run's scores: the whole catalog, a "new arrivals" shelf, and
what a score offset for cold items trades on the whole catalog.

    python benchmarks/cold_items.py runs/cold/checkpoint                                # IAM and popularity
    python benchmarks/cold_items.py runs/cold/checkpoint --sasrec runs/sasrec-cold0.2   # and SASRec, same split

The checkpoint is one that `examples/finetune.py --cold-items S` wrote (the cold items added after training, last
in its catalog). History excluded, ties pessimistic, validation and test users:

- **Whole catalog**: cold against warm targets (the run's own breakdown), with SASRec when given.
- **New arrivals**: for the users whose target is cold, its rank among the cold items only (those not in the
  user's history), what a shelf of items added since training would show. Popularity counts 0 for every cold item:
  all tie, so it ranks the target last among them; SASRec scores them with their initial embeddings (they are left
  out of its training softmax), on the shelf of the cold items it has an id for.
- **Offset**: on the whole catalog, cold items' scores raised by an offset (a prior for new items as a group).
  Validation picks the offset with the best NDCG@10 over all users; test is read at that offset and at 0 only.

Item-state cache on where the run used it; SASRec's scores are those `benchmarks/sasrec/train_score.py` dumped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "sasrec"))

from rank import sasrec_scores  # noqa: E402

from transformers_iam.experiments.build import eval_subset  # noqa: E402
from transformers_iam.experiments.evaluate import load_checkpoint_run  # noqa: E402
from transformers_iam.recsys.baselines import popularity_scores  # noqa: E402
from transformers_iam.recsys.breakdown import cold_breakdown, format_group_table, format_rank_distribution  # noqa: E402
from transformers_iam.recsys.metrics import metrics_from_ranks, target_ranks  # noqa: E402
from transformers_iam.recsys.paired import format_paired_table, paired_comparison  # noqa: E402

OFFSETS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)


def model_scores(checkpoint_dir: str, batch_size: int) -> dict:
    """The run's scores over its catalog for every validation and test user, with what ranking them needs."""
    run, data, model, collator = load_checkpoint_run(checkpoint_dir)
    if not data.cold_items:
        raise SystemExit(f"{checkpoint_dir}: not a run of the cold-item protocol (--cold-items)")
    catalog = model.catalog
    splits = {}
    for split in ("valid", "test"):
        dataset = eval_subset(data.split(split), run.data)
        scores, excluded = [], []
        for start in range(0, len(dataset), batch_size):
            batch = collator([dataset[index] for index in range(start, min(start + batch_size, len(dataset)))])
            history = batch.pop("history_item_indices")
            batch.pop("labels", None)
            with torch.no_grad():
                scores.append(model(**batch).logits.float())
            excluded += [[index for index in row if index >= 0] for row in history.tolist()]
        splits[split] = dict(
            users=list(dataset["user_id"]),
            targets=torch.tensor(catalog.indices_of(dataset["target"])),
            scores=torch.cat(scores),
            excluded=excluded if run.data.exclude_history else None,
            popularity=popularity_scores(data.popularity_sequences(split), catalog),
        )
    cold = torch.zeros(len(catalog), dtype=torch.bool)
    cold[catalog.indices_of(list(data.cold_items))] = True
    for split, values in splits.items():
        if not cold[values["targets"]].any():
            raise SystemExit(f"{checkpoint_dir}: no {split} user has a cold target: nothing to measure")
    return dict(config=run, data=data, catalog=catalog, cold=cold, splits=splits)


def by_user(users, ranks: torch.Tensor, keep: torch.Tensor | None = None) -> dict[str, int]:
    """``{user_id: rank}`` (ids as strings, as in metrics.json) of every user, or of those ``keep`` marks."""
    kept = [True] * len(users) if keep is None else keep.tolist()
    return {str(user): int(rank) for user, rank, chosen in zip(users, ranks.tolist(), kept) if chosen}


def sasrec_rows(run: dict, sasrec_dir: str, split: str) -> torch.Tensor:
    """SASRec's scores of ``split`` in the run's catalog columns and user rows."""
    with open(os.path.join(sasrec_dir, "sasrec_scores.json"), encoding="utf-8") as handle:
        dumped = json.load(handle)
    users, targets, scores = sasrec_scores(sasrec_dir, dumped, run["catalog"], split)
    values = run["splits"][split]
    order = {str(user): row for row, user in enumerate(users)}
    rows = [order[str(user)] for user in values["users"]]  # RecBole's rows in our users' order
    if [targets[row] for row in rows] != run["catalog"].ids_of(values["targets"].tolist()):
        raise SystemExit(f"{sasrec_dir}: SASRec's {split} targets are not this run's")
    return scores[rows]


def shelf(run: dict, split: str, rankers: dict[str, torch.Tensor], shelf_items: torch.Tensor) -> dict:
    """Each cold target's rank among ``shelf_items`` (a mask over the catalog) not in the user's history, for every
    ranker, over the users whose target is cold; each ranker paired against IAM."""
    values = run["splits"][split]
    targets, excluded, users = values["targets"], values["excluded"], values["users"]
    is_cold = run["cold"][targets]
    if not shelf_items[targets[is_cold]].all():
        raise ValueError("a cold target is not on the shelf: its rank would be meaningless")
    candidates = shelf_items[None, :].expand(len(targets), -1).clone()
    for row, items in enumerate(excluded or []):
        candidates[row, items] = False
    candidates = candidates[is_cold].sum(-1).float()
    ranks = {
        name: by_user(users, target_ranks(scores.masked_fill(~shelf_items, float("-inf")), targets, excluded), is_cold)
        for name, scores in rankers.items()
    }
    return dict(
        users=int(is_cold.sum()),
        shelf_items=int(shelf_items.sum()),
        candidates_median=float(candidates.median()),
        chance_median_rank=float(((candidates + 1) / 2).median()),  # a random order's expected rank
        metrics={name: metrics_from_ranks(list(r.values()), ks=(10, 50)) for name, r in ranks.items()},
        median_rank={name: float(torch.tensor(list(r.values())).float().median()) for name, r in ranks.items()},
        paired={
            f"IAM - {name}, {metric.upper()}": paired_comparison(ranks["IAM"], ranks[name], metric)
            for name in rankers
            if name != "IAM"
            for metric in ("ndcg@10", "hr@50")
        },
    )


def rankers_of(run: dict, split: str, sasrec_dir: str | None) -> dict[str, torch.Tensor]:
    """Each ranker's ``(users, items)`` scores of ``split`` in the run's catalog and user order."""
    values = run["splits"][split]
    rankers = {"IAM": values["scores"], "popularity": values["popularity"].expand(len(values["targets"]), -1)}
    if sasrec_dir:
        rankers["SASRec"] = sasrec_rows(run, sasrec_dir, split)
    return rankers


def new_arrivals(run: dict, rankers: dict[str, dict[str, torch.Tensor]]) -> dict:
    """The shelf of every cold item (IAM, popularity) and, with SASRec, the shelf of the cold items SASRec has an
    id for (all three): RecBole scores the others -inf, which would shorten its shelf alone."""
    results = {"every cold item": {}, "cold items SASRec has an id for": {}}
    for split, scores in rankers.items():
        results["every cold item"][split] = shelf(
            run, split, {"IAM": scores["IAM"], "popularity": scores["popularity"]}, run["cold"]
        )
        if "SASRec" in scores:
            known = run["cold"] & torch.isfinite(scores["SASRec"]).all(0)
            results["cold items SASRec has an id for"][split] = shelf(run, split, scores, known)
    return {name: splits for name, splits in results.items() if splits}


def full_catalog(run: dict, rankers: dict[str, dict[str, torch.Tensor]]) -> dict:
    """Cold against warm targets on the whole catalog (the run's own breakdown, SASRec added when given)."""
    results = {}
    for split, scores in rankers.items():
        values = run["splits"][split]
        targets, users = values["targets"], values["users"]
        ranks = {
            name: by_user(users, target_ranks(matrix, targets, values["excluded"])) for name, matrix in scores.items()
        }
        target_ids = dict(zip(map(str, users), run["catalog"].ids_of(targets.tolist())))
        results[split] = cold_breakdown(ranks, target_ids, run["data"].cold_items, len(run["catalog"]))
    return results


def offset_ndcg(run: dict, split: str, offset: float) -> dict:
    """NDCG@10 on the full catalog with cold items' scores raised by ``offset``: all users, cold and warm targets,
    and the per-user ranks."""
    values = run["splits"][split]
    targets, is_cold = values["targets"], run["cold"][values["targets"]]
    ranks = target_ranks(values["scores"] + offset * run["cold"], targets, values["excluded"])
    return dict(
        all=metrics_from_ranks(ranks)["ndcg@10"],
        cold=metrics_from_ranks(ranks[is_cold])["ndcg@10"],
        warm=metrics_from_ranks(ranks[~is_cold])["ndcg@10"],
        ranks=by_user(values["users"], ranks),
    )


def offsets(run: dict) -> dict:
    """Validation's curve over ``OFFSETS`` picks the offset with the best NDCG@10 over all users; test is read at
    that offset and at 0 only, paired."""
    curve = {offset: offset_ndcg(run, "valid", offset) for offset in OFFSETS}
    chosen = max(OFFSETS, key=lambda offset: curve[offset]["all"])
    test = {offset: offset_ndcg(run, "test", offset) for offset in dict.fromkeys((0.0, chosen))}
    strip = lambda values: {key: value for key, value in values.items() if key != "ranks"}  # noqa: E731
    return dict(
        valid={offset: strip(values) for offset, values in curve.items()},
        chosen_on_validation=chosen,
        test={offset: strip(values) for offset, values in test.items()},
        test_paired_vs_no_offset=paired_comparison(test[chosen]["ranks"], test[0.0]["ranks"]),
    )


def print_report(whole: dict, shelf_results: dict, trade: dict) -> None:
    """The report's three tables in markdown: the whole catalog, each new-arrivals shelf, the cold-item offsets."""
    for split, breakdown in whole.items():
        print(f"\n### The whole catalog ({split}): cold against warm targets, NDCG@10 and the cold targets' ranks\n")
        print(format_group_table(breakdown, metric="ndcg@10") + "\n")
        print(format_rank_distribution(breakdown, "cold"))
    for shelf_name, splits in shelf_results.items():
        for split, result in splits.items():
            print(
                f"\n### New arrivals, {shelf_name} ({result['shelf_items']} items; {split}): {result['users']} users "
                f"whose target is cold, ranked among the shelf's items not in their history (median "
                f"{result['candidates_median']:.0f}; a random order's median rank {result['chance_median_rank']:.0f}); "
                "ties pessimistic\n"
            )
            print("| ranker | NDCG@10 | HR@10 | HR@50 | median rank |")
            print("| --- | --- | --- | --- | --- |")
            for name, metrics in result["metrics"].items():
                print(
                    f"| {name} | {metrics['ndcg@10']:.4f} | {metrics['hr@10']:.4f} | {metrics['hr@50']:.4f} | "
                    f"{result['median_rank'][name]:.0f} |"
                )
            print()
            print(format_paired_table(result["paired"]))
    print(
        "\n### A score offset for cold items on the full catalog (validation NDCG@10: all users, cold and warm "
        "targets)\n"
    )
    print("| offset | all | cold targets | warm targets |")
    print("| --- | --- | --- | --- |")
    for offset, values in trade["valid"].items():
        print(f"| {offset:g} | {values['all']:.4f} | {values['cold']:.4f} | {values['warm']:.4f} |")
    chosen = trade["chosen_on_validation"]
    if chosen:
        print(f"\nvalidation chooses offset {chosen:g}; test, read at it and at 0:")
    else:
        print("\nvalidation chooses no offset (0); test, read at it:")
    for offset, values in trade["test"].items():
        print(
            f"- offset {offset:g}: all {values['all']:.4f}, cold targets {values['cold']:.4f}, "
            f"warm {values['warm']:.4f}"
        )
    if chosen:  # at 0 the pair would compare the ranks with themselves
        print()
        print(format_paired_table({f"offset {chosen:g} - 0": trade["test_paired_vs_no_offset"]}))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint folder that examples/finetune.py --cold-items wrote")
    parser.add_argument("--sasrec", help="SASRec's folder on the same exported split (export.py --cold-items)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    run = model_scores(args.checkpoint, args.batch_size)
    rankers = {split: rankers_of(run, split, args.sasrec) for split in run["splits"]}
    whole = full_catalog(run, rankers)
    shelf_results = new_arrivals(run, rankers)
    trade = offsets(run)
    print_report(whole, shelf_results, trade)
    result = dict(
        checkpoint=args.checkpoint, sasrec=args.sasrec, whole_catalog=whole, new_arrivals=shelf_results, offsets=trade
    )
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as handle:
            json.dump(
                result,
                handle,
                indent=1,
                default=lambda value: dataclasses.asdict(value) if dataclasses.is_dataclass(value) else str(value),
            )
    return result


if __name__ == "__main__":
    main()
