"""docs/results.json, the record every table of results comes from: add a run's numbers to it, regenerate the tables.

    python benchmarks/record_results.py add runs/final/cpu-quick --dataset ml-100k --model "IAM (cpu-quick)" \
        --sasrec runs/sasrec/sasrec_metrics.json --headline       # a run's valid and test numbers, all and per group
    python benchmarks/record_results.py add runs/sasrec/sasrec_metrics.json --dataset ml-100k --model SASRec \
        --command "bash benchmarks/sasrec/run.sh ml-100k" --headline  # SASRec (its epochs and whether it converged)
    python benchmarks/record_results.py add runs/bx --dataset book-crossing --model popularity --ranker popularity
                                                     # the popularity ranks a run computed beside the model
    python benchmarks/record_results.py add runs/scaling/scaling.json --model "IAM cpu-quick, 20 steps" \
        --command "python benchmarks/scaling.py --items 10000 100000"    # one entry per size: synthetic-10k, ...
    python benchmarks/record_results.py update README.md docs/results.md   # rewrite every results-table block
    python benchmarks/record_results.py check README.md docs/results.md    # exit 1 when a table differs

An entry is one (run, split, target group): test and valid, all users, and the long-tail groups (and cold / warm
targets under the cold-item protocol) from the run's breakdown. ``--sasrec`` pairs the run with SASRec's per-user
ranks on the same users (NDCG@10 difference and its 95% bootstrap interval). Adding a (dataset, model) pair already
in the record replaces its entries.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys

from transformers_iam.recsys.metrics import metrics_from_ranks
from transformers_iam.recsys.paired import paired_comparison
from transformers_iam.recsys.record import check_entry, load_record, stale_tables, update_tables

RECORD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "results.json")


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, no GPU"


def _paired(ranks: dict[str, int], sasrec: dict | None, split: str, users: list[str]) -> dict | None:
    if sasrec is None:
        return None
    theirs = sasrec.get("ranks", {}).get(split, {}).get("model", {})
    if not set(users) <= set(theirs):
        raise SystemExit(f"SASRec's ranks do not cover the run's {split} users: another split?")
    result = paired_comparison({user: ranks[user] for user in users}, {user: theirs[user] for user in users})
    return {
        "ndcg@10": [round(result.difference, 4), round(result.interval[0], 4), round(result.interval[1], 4)],
        "relative": f"{result.relative:+.1%}",
    }


def run_entries(
    path: str, dataset: str, model: str, sasrec: dict | None, command: str | None, ranker: str = "model"
) -> list[dict]:
    """The entries of a main-job run (its metrics.json): both splits, all users and each breakdown group, of the
    model or of another ranker the run ranked the same users with (``popularity``)."""
    with open(path, encoding="utf-8") as handle:
        results = json.load(handle)
    base = {
        "dataset": dataset,
        "model": model,
        "command": command or results["config"]["command"],
        "date": datetime.date.fromtimestamp(os.path.getmtime(path)).isoformat(),
        "machine": results.get("machine", _machine()),
        "wall_seconds": results.get("wall_seconds"),
    }
    entries = []
    for split in ("test", "valid"):
        if ranker not in results["ranks"][split]:
            raise SystemExit(f"{path}: no {ranker!r} ranks for {split} (has {sorted(results['ranks'][split])})")
        ranks = results["ranks"][split][ranker]
        entries.append(_entry(base, split, "all", ranks, list(ranks), sasrec))
        for kind in ("long_tail", "cold"):
            groups = results.get("breakdown", {}).get(kind, {}).get(split, {}).get("groups", {})
            for group, content in groups.items():
                users = content.get("user_ids", [])
                if group == "unseen" or not users:
                    continue
                entries.append(_entry(base, split, group, ranks, users, sasrec))
    return entries


def _entry(base: dict, split: str, targets: str, ranks: dict, users: list[str], sasrec: dict | None) -> dict:
    metrics = metrics_from_ranks([ranks[user] for user in users])
    entry = {
        **base,
        "split": split,
        "targets": targets,
        "users": len(users),
        "ndcg@10": round(metrics["ndcg@10"], 4),
        "hr@10": round(metrics["hr@10"], 4),
    }
    paired = _paired(ranks, sasrec, split, users)
    if paired is not None:
        entry["vs_sasrec"] = paired
    return entry


def sasrec_entries(path: str, dataset: str, model: str, command: str) -> list[dict]:
    """SASRec's entries (rank.py's sasrec_metrics.json): both splits, all users, with its training record."""
    with open(path, encoding="utf-8") as handle:
        results = json.load(handle)
    training = results.get("training", {})
    base = {
        "dataset": dataset,
        "model": model,
        "command": command,
        "date": datetime.date.fromtimestamp(os.path.getmtime(path)).isoformat(),
        "machine": _machine(),
        "converged": bool(training.get("converged", training.get("stopped_early", False))),
        "epochs": training.get("epochs_run"),
        "best_epoch": training.get("best_epoch"),
        "wall_seconds": training.get("wall_seconds"),
    }
    entries = []
    for split in ("test", "valid"):
        ranks = results["ranks"][split]["model"]
        entries.append(_entry(base, split, "all", ranks, list(ranks), None))
    return entries


def synthetic_name(items: int) -> str:
    """``synthetic-10k``, ``synthetic-100k``, ``synthetic-1m``: the data set name of a synthetic catalog's size."""
    for size, suffix in ((1_000_000, "m"), (1_000, "k")):
        if items >= size and items % size == 0:
            return f"synthetic-{items // size}{suffix}"
    return f"synthetic-{items}"


SCALING_FIELDS = (
    "peak_rss_gb",
    "text_init_items_per_s",
    "cache_items_per_s",
    "train_targets_per_s",
    "eval_users_per_s",
)


def scaling_entries(path: str, model: str, command: str) -> list[dict]:
    """The entries of ``benchmarks/scaling.py --out`` (one synthetic catalog per size that ran through): the quality
    of its short run on each split, and the costs measured (``scaling``)."""
    with open(path, encoding="utf-8") as handle:
        results = json.load(handle)
    entries = []
    # ml-100k's default run cut to the same steps (``--ml-100k``): not an entry of its own (20 steps are no result on
    # ml-100k), the training rate each size's is compared with
    references = [row for row in results["rows"] if row.get("dataset") and row["status"] == "ran through"]
    for row in results["rows"]:
        if row["status"] != "ran through" or row.get("dataset"):
            continue
        costs = {field: None if row[field] is None else round(row[field], 3) for field in SCALING_FIELDS}
        for reference in references:
            costs[f"{reference['dataset']}_train_targets_per_s"] = round(reference["train_targets_per_s"], 3)
        for kind in ("exact", "ivf"):
            costs[f"{kind}_p50_ms"], costs[f"{kind}_p99_ms"] = (
                round(row[kind]["p50_ms"], 1),
                round(row[kind]["p99_ms"], 1),
            )
        # the user's forward alone: the part of an indexed call that no index shortens
        for quantile, value in (row["details"].get("user_state") or {}).items():
            if quantile.endswith("_ms") and value is not None and math.isfinite(value):
                costs[f"user_state_{quantile}"] = round(value, 1)
        costs["ivf_recall@10"] = round(row["ivf"]["recall@10"], 4)
        costs["ivf_nprobe"] = row["ivf"].get("nprobe")
        for other in row["details"].get("ivf_sweep", [])[1:]:
            costs[f"ivf_nprobe{other['nprobe']}"] = {
                "p50_ms": round(other["p50_ms"], 1),
                "p99_ms": round(other["p99_ms"], 1),
                "recall@10": round(other["recall@10"], 4),
            }
        if row.get("cache_load"):
            costs["item_state_load_seconds"] = row["cache_load"]["seconds"]
            costs["item_state_loaded"] = row["cache_load"]["loaded"]
        costs["phase_seconds"] = row["phase_seconds"]
        base = {
            "dataset": synthetic_name(row["items"]),
            "model": model,
            "command": command,
            "date": datetime.date.fromtimestamp(os.path.getmtime(path)).isoformat(),
            "machine": _machine(),
            "catalog": {key: row[key] for key in ("items", "users", "interactions")},
            "scaling": costs,
        }
        for split in ("test", "valid"):
            metrics = row["details"]["metrics"][split]
            entries.append(
                {
                    **base,
                    "split": split,
                    "targets": "all",
                    "users": metrics["users"],
                    "ndcg@10": round(metrics["ndcg@10"], 4),
                    "hr@10": round(metrics["hr@10"], 4),
                }
            )
    return entries


def add(args: argparse.Namespace) -> None:
    record = load_record(args.record) if os.path.isfile(args.record) else []
    sasrec = None
    if args.sasrec:
        with open(args.sasrec, encoding="utf-8") as handle:
            sasrec = json.load(handle)
    if os.path.basename(args.run).startswith("scaling"):
        if not args.command:
            raise SystemExit("scaling entries need --command (the benchmarks/scaling.py command)")
        entries = scaling_entries(args.run, args.model, args.command)
        replaced = {(entry["dataset"], entry["model"]) for entry in entries}
        kept = [entry for entry in record if (entry["dataset"], entry["model"]) not in replaced]
        _write(args.record, kept + entries)
        print(f"{args.record}: {len(entries)} entries for {args.model!r} on {sorted({e['dataset'] for e in entries})}")
        return
    if args.dataset is None:
        raise SystemExit("add needs --dataset")
    if os.path.basename(args.run).startswith("sasrec_metrics"):
        if not args.command:
            raise SystemExit("a SASRec entry needs --command (the export, train and rank commands)")
        entries = sasrec_entries(args.run, args.dataset, args.model, args.command)
    else:
        path = args.run if args.run.endswith(".json") else os.path.join(args.run, "metrics.json")
        entries = run_entries(path, args.dataset, args.model, sasrec, args.command, args.ranker)
    for entry in entries:
        if args.headline and entry["targets"] == "all":
            entry["headline"] = True
    kept = [entry for entry in record if (entry["dataset"], entry["model"]) != (args.dataset, args.model)]
    _write(args.record, kept + entries)
    print(f"{args.record}: {len(entries)} entries for {args.model!r} on {args.dataset}")


def _write(path: str, record: list[dict]) -> None:
    for entry in record:
        check_entry(entry)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1, ensure_ascii=False)
        handle.write("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", default=RECORD)
    commands = parser.add_subparsers(dest="verb", required=True)
    adding = commands.add_parser("add")
    adding.add_argument("run", help="a run folder (its metrics.json), a sasrec_metrics.json or a scaling*.json")
    adding.add_argument("--dataset", help="the data set (not for scaling*.json: synthetic-<size>)")
    adding.add_argument("--model", required=True, help="the row's name in the tables")
    adding.add_argument("--sasrec", help="sasrec_metrics.json on the same split: pair each row with SASRec")
    adding.add_argument("--command", help="the command that reproduces it (default: the run's own)")
    adding.add_argument("--headline", action="store_true", help="a row of README's table for this data set")
    adding.add_argument("--ranker", default="model", help="whose ranks in the run's metrics.json: model, popularity")
    for verb in ("update", "check"):
        commands.add_parser(verb).add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    if args.verb == "add":
        add(args)
        return 0
    record = load_record(args.record)
    stale = {}
    for name in args.files:
        with open(name, encoding="utf-8") as handle:
            text = handle.read()
        if args.verb == "update":
            with open(name, "w", encoding="utf-8") as handle:
                handle.write(update_tables(text, record))
        elif stale_tables(text, record):
            stale[name] = stale_tables(text, record)
    for name, specs in stale.items():
        print(f"{name}: tables out of date with {args.record}: {specs}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
