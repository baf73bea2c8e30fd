"""Compare two runs user by user from the per-user ranks in their metrics.json (paired bootstrap, sign test).

    python benchmarks/paired.py runs/cpu-quick-stacked/metrics.json                  # the run vs its popularity
    python benchmarks/paired.py runs/cpu-quick-stacked/metrics.json runs/cpu-quick-vanilla/metrics.json
    python benchmarks/paired.py runs/cpu-quick-stacked/metrics.json runs/sasrec/sasrec_metrics.json --split valid

A path is a run's model; ``PATH:popularity`` is the popularity ranks stored in that run. Both sides must hold the
same users (a smoke run evaluated on a few users only pairs with another such run). A side may be several runs of one
configuration (seeds), comma-separated: each user's value is averaged over them before pairing:

    python benchmarks/paired.py runs/a0/metrics.json,runs/a1/metrics.json runs/b0/metrics.json,runs/b1/metrics.json

Prints a markdown table for NDCG@10 and HR@10 with the protocol line.
"""

from __future__ import annotations

import argparse
import json
import os

from transformers_iam.recsys.paired import PairedResult, format_paired_table, paired_comparison

METRICS = ("ndcg@10", "hr@10")


def load_ranks(spec: str, split: str) -> tuple[str, dict[str, int]]:
    """``(name, {user_id: rank})`` of ``PATH`` (the model) or ``PATH:popularity`` on ``split``."""
    path, _, which = spec.rpartition(":") if spec.endswith(":popularity") else (spec, "", "model")
    with open(path, encoding="utf-8") as handle:
        results = json.load(handle)
    if "ranks" not in results:
        raise SystemExit(f"{path} has no per-user ranks (written by runs from before the paired comparison): rerun it")
    folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
    name = "popularity" if which == "popularity" else folder
    if which == "popularity" and folder:
        name = f"popularity ({folder})"
    return name, results["ranks"][split][which]


def load_side(specs: str, split: str) -> tuple[str, list[dict[str, int]]]:
    """``(name, [ranks of each run])`` of one side: a spec, or several comma-separated (seeds, averaged per user)."""
    loaded = [load_ranks(spec, split) for spec in specs.split(",")]
    return " + ".join(name for name, _ in loaded), [ranks for _, ranks in loaded]


def compare(
    spec_a: str, spec_b: str | None = None, split: str = "test", resamples: int = 10_000, seed: int = 0
) -> dict[str, PairedResult]:
    """The comparisons ``"A vs B, metric"`` -> result; without ``spec_b``, A's run against its own popularity."""
    if spec_b is None:
        spec_b = ",".join(f"{spec}:popularity" for spec in spec_a.split(","))
    name_a, ranks_a = load_side(spec_a, split)
    name_b, ranks_b = load_side(spec_b, split)
    return {
        f"{name_a} vs {name_b}, {metric.upper()}": paired_comparison(ranks_a, ranks_b, metric, resamples, seed)
        for metric in METRICS
    }


def main(argv=None) -> dict[str, PairedResult]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="metrics.json of run A (or PATH:popularity; several, comma-separated: seeds)")
    parser.add_argument("b", nargs="?", help="metrics.json of run B (the same forms); default: A's popularity")
    parser.add_argument("--split", default="test", choices=["test", "valid"])
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = compare(args.a, args.b, args.split, args.resamples, args.seed)
    print(f"{args.split} split; " + format_paired_table(rows))
    return rows


if __name__ == "__main__":
    main()
