"""A run's results (``metrics.json``) as named rows of a metrics table, for reports and model cards."""

from __future__ import annotations


def run_name(config: dict) -> str:
    """How a run is named in reports: the layout, or the ablation, in words."""
    if config.get("iam_layer_types"):
        return "IAM (" + ",".join(config["iam_layer_types"]) + ")"
    if config.get("ablation"):
        return {"no-intra": "IAM without intra layers", "no-inter": "IAM without inter layers"}[config["ablation"]]
    if config.get("iam_layout") == "vanilla":
        return "same LLM without IAM (vanilla)"
    return f"IAM {config.get('iam_layout', 'stacked')}"


def results_rows(results: dict) -> dict[str, dict[str, float]]:
    """The metrics table of a run: the model and popularity, test first (for reports and model cards)."""
    name = run_name(results.get("config", {}))
    rows = {}
    for split in ("test", "valid"):
        rows[f"{name}, {split}"] = results[split]
        if split in results.get("popularity", {}):
            rows[f"popularity, {split}"] = results["popularity"][split]
    return rows
