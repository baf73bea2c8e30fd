"""A run's results (``metrics.json``) as named rows of a metrics table, for reports and model cards."""

from __future__ import annotations


def run_name(config: dict) -> str:
    """How a run is named in reports, from its model arguments (``experiment.json``'s ``"model"``): the layout, or the
    ablation, in words; item-level, item id embeddings and rows read from text said.

    Example:
        >>> run_name({"iam_layout": "stacked", "num_item_tokens": 1, "use_item_id_embeddings": True})
        'item-level IAM stacked + item ids'
    """
    if config.get("iam_layer_types"):
        name = "IAM (" + ",".join(config["iam_layer_types"]) + ")"
    elif config.get("ablation"):
        name = {"no-intra": "IAM without intra layers", "no-inter": "IAM without inter layers"}[config["ablation"]]
    elif config.get("iam_layout") == "vanilla":
        return "same LLM without IAM (vanilla)" + (" + item ids" if config.get("use_item_id_embeddings") else "")
    else:
        name = f"IAM {config.get('iam_layout', 'stacked')}"
    if config.get("num_item_tokens"):
        name = "item-level " + name + (f" (last {config['num_item_tokens']} states)" * (config["num_item_tokens"] > 1))
    if config.get("use_item_id_embeddings"):
        width = config.get("item_id_embedding_size")
        name += " + item ids" + (f" ({width}-wide)" if width else "")
    if config.get("item_rows_from_text"):
        dropout = config.get("new_item_dropout") or 0
        name += " + rows from text" + (f" (new-item dropout {dropout:g})" if dropout else "")
    return name


def results_rows(results: dict) -> dict[str, dict[str, float]]:
    """The metrics table of a run: the model and popularity, test first (for reports and model cards)."""
    name = run_name(results.get("config", {}).get("model", {}))
    rows = {}
    for split in ("test", "valid"):
        rows[f"{name}, {split}"] = results[split]
        if split in results.get("popularity", {}):
            rows[f"popularity, {split}"] = results["popularity"][split]
    return rows
