"""What a run leaves for a person: the report (markdown), the comparison with popularity in words, and the figure
(``plots.py``)."""

from __future__ import annotations

import json
import os

from ..recsys.breakdown import format_group_table, format_rank_distribution
from ..recsys.metrics import DEFAULT_KS, format_metrics_table, metrics_from_ranks
from ..recsys.paired import PairedResult, comparison_sentence
from ..recsys.results import results_rows, run_name
from .plots import plot_validation
from .run_arguments import RunArguments

__all__ = ["data_tag", "find_sasrec_reference", "plot_validation", "render_report"]

SASREC_METRICS = "sasrec_metrics.json"


def data_tag(dataset: str | None = None, cold_items: float | None = None, cold_item_pattern: str | None = None) -> str:
    r"""What tells a run's folder (and SASRec's) on another data set or protocol from the ml-100k default's.

    Example:
        >>> data_tag(), data_tag("ml-1m"), data_tag("ml-1m", 0.2), data_tag(None, 0.2)
        ('', '-ml-1m', '-ml-1m-cold0.2', '-cold0.2')
        >>> data_tag("ml-1m", cold_item_pattern=r"\(2000\) \|")
        '-ml-1m-new-arrivals'
    """
    tag = "" if dataset in (None, "ml-100k") else f"-{dataset}"
    if cold_item_pattern is not None:
        return tag + "-new-arrivals"
    return tag + ("" if cold_items is None else f"-cold{cold_items:g}")


def sasrec_metrics_path(run: RunArguments) -> str:
    """``sasrec_metrics``, or by default ``sasrec<tag>/sasrec_metrics.json`` beside the run's folder
    (``runs/sasrec`` for an ml-100k run in ``runs/cpu-quick-stacked``, ``runs/sasrec-ml-1m-cold0.2`` for
    ``--dataset ml-1m --cold-items 0.2``: :func:`data_tag`), where ``benchmarks/sasrec/rank.py`` writes it."""
    if run.data.sasrec_metrics:
        return run.data.sasrec_metrics
    parent = os.path.dirname(os.path.abspath(run.training.output_dir))
    tag = data_tag(run.data.dataset, run.data.cold_items, run.data.cold_item_pattern)
    return os.path.join(parent, "sasrec" + tag, SASREC_METRICS)


def find_sasrec_reference(
    run: RunArguments, statistics: dict, users: dict[str, list[str]] | None = None
) -> dict | None:
    """SASRec's validation and test metrics for the plot and the report, only when they are for the same split.

    The same split: the file's dataset (name, users, items, interactions and the cold items, if any; recorded by
    ``rank.py``) matches the run's, or, for an older file without it, its user count does. With per-user ranks in
    the file, the metrics are recomputed over the run's own evaluated ``users`` (a smoke run evaluates a few) and
    those users' ranks are returned too, under ``"ranks"`` (``{split: {user_id: rank}}``, for the breakdowns);
    without them, only a run that evaluated every user gets a reference. None when there is no file or it does not
    match.
    """
    path = sasrec_metrics_path(run)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        saved = json.load(handle)
    recorded = saved.get("dataset")
    if recorded is not None:
        keys = ("name", "users", "items", "interactions", "cold_items")
        if any(recorded.get(key) != statistics.get(key) for key in keys):
            return None
    elif statistics.get("cold_items") or saved.get("SASRec, valid", {}).get("users") != statistics.get("users"):
        return None
    reference = {"path": path}
    for split in ("valid", "test"):
        split_ranks = saved.get("ranks", {}).get(split, {}).get("model")
        wanted = (users or {}).get(split)
        if split_ranks is not None and wanted is not None:
            if not set(wanted) <= set(split_ranks):
                return None
            reference[split] = metrics_from_ranks([split_ranks[user] for user in wanted])
            reference.setdefault("ranks", {})[split] = {user: int(split_ranks[user]) for user in wanted}
        elif wanted is None or len(wanted) == statistics.get("users"):
            reference[split] = saved[f"SASRec, {split}"]
        else:
            return None
    return reference


def render_report(results: dict) -> str:
    config = results["config"]
    name = run_name(config["model"])
    rows = results_rows(results)
    stats = results["dataset"]
    lines = [
        f"# {name} on {stats['name']}",
        "",
        results["protocol"] + ".",
        "Checkpoint selected on validation NDCG@10 (step "
        f"{results['best_step']}); test evaluated once on it. K = {', '.join(map(str, DEFAULT_KS))}.",
        "",
    ]
    paired = results.get("paired_vs_popularity", {})
    for split in ("test", "valid"):
        if "ndcg@10" in paired.get(split, {}):
            lines.append(comparison_sentence(PairedResult(**paired[split]["ndcg@10"]), name, "popularity", split) + ".")
    if paired:
        first = next(iter(next(iter(paired.values())).values()))
        lines += [
            f"(Paired over the same users: {first['resamples']:,} bootstrap resamples of users, seed {first['seed']}; "
            "sign test over the users whose NDCG@10 differs; `python benchmarks/paired.py <run>/metrics.json` for "
            "HR@10 and other pairs.)",
            "",
        ]
    sasrec = results.get("sasrec")
    if sasrec:
        lines += [
            f"SASRec on the same split ({sasrec['path']}): NDCG@10 {sasrec['test']['ndcg@10']:.4f} on test, "
            f"{sasrec['valid']['ndcg@10']:.4f} on validation.",
            "",
        ]
    lines += [
        format_metrics_table(rows),
        "",
        f"- data: {stats['users']} users, {stats['items']} items, {stats['interactions']} interactions; "
        f"{stats['train_examples']} training examples ("
        + (
            "windows"
            if stats.get("train_windows")
            else f"prefixes per user: {stats['train_examples_per_user'] or 'all'}"
        )
        + f"), histories capped at {stats['max_history']} items; supervision: {results.get('supervision', 'last')}, "
        f"{results.get('train_targets', stats['train_examples'])} training targets per epoch",
        f"- model: {results['model']['backbone']}, layers {results['model']['layer_types']}; "
        f"{results['model']['trained_parameters']:,} of {results['model']['total_parameters']:,} parameters trained"
        + (" (LoRA)" if results["model"]["lora"] else "")
        + ("; item-state cache on" if results["model"].get("item_cache") else ""),
        f"- training {results['train_seconds']} s, wall {results['wall_seconds']} s on {results['machine']}"
        + (f", peak RSS {results['peak_rss_mib']:.0f} MiB" if "peak_rss_mib" in results else "")
        + (f", peak GPU memory {results['peak_gpu_mib']:.0f} MiB" if "peak_gpu_mib" in results else ""),
        "- figure: `validation_ndcg10.png` (training loss; validation NDCG@10 per evaluation with popularity"
        + (" and SASRec" if sasrec else "")
        + " as lines; both axes from 0)",
        f"- command: `{config['command']}`",
    ]
    lines += [f"- note: {note}" for note in config["notes"]]
    lines += breakdown_section(results.get("breakdown", {}), {"model": name})
    return "\n".join(lines) + "\n"


def breakdown_section(breakdown: dict, names: dict[str, str], split: str = "test") -> list[str]:
    """The report's lines for ``metrics.json["breakdown"]`` on one split: the long-tail table (NDCG@10 per group of
    targets) and, under the cold-item protocol, cold against warm targets (NDCG@10, HR@10) with the cold targets'
    rank distribution. Empty for a run from before the breakdowns."""
    lines = []
    long_tail = breakdown.get("long_tail", {}).get(split)
    if long_tail:
        lines += [
            "",
            f"## The long tail ({split})",
            "",
            long_tail["definition"][0].upper() + long_tail["definition"][1:] + "; paired over each group's users.",
            "",
            format_group_table(long_tail, names, "ndcg@10"),
        ]
    cold = breakdown.get("cold", {}).get(split)
    if cold:
        lines += [
            "",
            f"## Cold items ({split})",
            "",
            cold["definition"][0].upper() + cold["definition"][1:] + ".",
            "",
            format_group_table(cold, names, "ndcg@10"),
            "",
            format_group_table(cold, names, "hr@10"),
            "",
            "At chance every ranker's NDCG@10 on cold targets is about 0; where the cold targets land:",
            "",
            format_rank_distribution(cold, "cold", names),
        ]
    return lines
