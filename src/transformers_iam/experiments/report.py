"""What a run leaves for a person: the report (markdown) and the validation plot."""

from __future__ import annotations

from ..recsys.metrics import DEFAULT_KS, format_metrics_table
from ..recsys.results import results_rows, run_name


def plot_validation(
    log_history: list[dict], path: str, metric: str = "ndcg@10", reference: dict[str, float] | None = None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(entry["step"], entry[f"eval_{metric}"]) for entry in log_history if f"eval_{metric}" in entry]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot([step for step, _ in points], [value for _, value in points], marker="o", label="IAM checkpoints")
    for label, value in (reference or {}).items():
        axis.axhline(value, linestyle="--", color="gray", label=label)
    axis.legend(loc="best")
    axis.set_xlabel("training step")
    axis.set_ylabel(f"validation {metric.upper()}")
    axis.set_title("IAM on the validation split (full-catalog ranking)")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def render_report(results: dict) -> str:
    config = results["config"]
    name = run_name(config)
    rows = results_rows(results)
    stats = results["dataset"]
    lines = [
        f"# {name} on {stats['name']}",
        "",
        results["protocol"] + ".",
        "Checkpoint selected on validation NDCG@10 (step "
        f"{results['best_step']}); test evaluated once on it. K = {', '.join(map(str, DEFAULT_KS))}.",
        "",
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
        f"- training {results['train_seconds']} s, wall {results['wall_seconds']} s on {results['machine']}",
        f"- command: `{config['command']}`",
    ]
    lines += [f"- note: {note}" for note in config["notes"]]
    return "\n".join(lines) + "\n"
