"""The run's figure: training loss beside validation NDCG@10, with popularity (and SASRec) as horizontal lines.

Both axes start at 0, so that a difference of 0.001 looks as small as it is.

Example:
    >>> log = [{"step": 10, "loss": 6.9}, {"step": 10, "eval_ndcg@10": 0.031}, {"step": 20, "eval_ndcg@10": 0.035}]
    >>> import os
    >>> plot_validation(log, os.path.join(tmp, "curve.png"), reference={"popularity": 0.034})
    >>> os.path.isfile(os.path.join(tmp, "curve.png"))
    True
"""

from __future__ import annotations


def plot_validation(
    log_history: list[dict], path: str, metric: str = "ndcg@10", reference: dict[str, float] | None = None
) -> None:
    """Two panels from the Trainer's ``log_history``: the training loss per logging step, and the validation metric
    per evaluation (any number of points) with each ``reference`` value as a dashed horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry and "step" in entry]
    points = [(entry["step"], entry[f"eval_{metric}"]) for entry in log_history if f"eval_{metric}" in entry]
    figure, (loss_axis, axis) = plt.subplots(1, 2, figsize=(11, 3.8))

    if losses:
        loss_axis.plot([step for step, _ in losses], [value for _, value in losses], color="tab:gray")
    else:  # a run shorter than one logging interval
        loss_axis.text(0.5, 0.5, "no training loss logged", ha="center", va="center", transform=loss_axis.transAxes)
    loss_axis.set_xlabel("training step")
    loss_axis.set_ylabel("training loss (cross-entropy)")
    loss_axis.set_title("training loss")
    loss_axis.set_ylim(bottom=0)
    loss_axis.grid(alpha=0.3)

    # many evaluations: markers only while they stay readable
    marker = "o" if len(points) <= 30 else None
    axis.plot([step for step, _ in points], [value for _, value in points], marker=marker, label="IAM checkpoints")
    styles = iter([("tab:orange", "--"), ("tab:green", "-."), ("tab:red", ":"), ("tab:purple", "--")])
    for label, value in (reference or {}).items():
        color, linestyle = next(styles, ("gray", "--"))
        axis.axhline(value, linestyle=linestyle, color=color, label=f"{label} ({value:.4f})")
    top = max([value for _, value in points] + list((reference or {}).values()) + [1e-3])
    axis.set_ylim(0, top * 1.15)
    axis.legend(loc="lower right")
    axis.set_xlabel("training step")
    axis.set_ylabel(f"validation {metric.upper()}")
    axis.set_title("validation split (full-catalog ranking)")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
