"""Training loss and validation NDCG@10 of several runs on one figure, against steps and against training time.

    python benchmarks/curves.py runs/a runs/b ... --out docs/images/curves.png --title "cpu-quick budget"

Each run folder is one written by examples/finetune.py: the curves come from its metrics.json (``training_curve``,
``validation_curve``), or, for runs written before metrics.json kept the loss, from the Trainer's last
``trainer_state.json`` in the run's ``trainer/`` folder. Training time is the run's training seconds spread evenly
over its steps (validation passes included), so curves of runs with different step costs compare per minute.
"""

from __future__ import annotations

import argparse
import glob
import json
import os


def curves(folder: str) -> dict:
    """``{"name", "loss": [(step, loss)], "valid": [(step, ndcg@10)], "seconds_per_step", "popularity"}``."""
    with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as handle:
        metrics = json.load(handle)
    losses = [(entry["step"], float(entry["loss"])) for entry in metrics.get("training_curve", [])]
    steps = metrics.get("total_steps")
    if not losses or steps is None:
        states = sorted(
            glob.glob(os.path.join(folder, "trainer", "checkpoint-*", "trainer_state.json")),
            key=lambda path: int(path.split("checkpoint-")[-1].split(os.sep)[0]),
        )
        if states:
            with open(states[-1], encoding="utf-8") as handle:
                state = json.load(handle)
            losses = losses or [(e["step"], float(e["loss"])) for e in state["log_history"] if "loss" in e]
            steps = steps or state.get("max_steps") or state.get("global_step")
    valid = [(entry["step"], entry["ndcg@10"]) for entry in metrics["validation_curve"]]
    steps = steps or max(step for step, _ in valid)
    return {
        "name": os.path.basename(os.path.normpath(folder)),
        "loss": losses,
        "valid": valid,
        "seconds_per_step": metrics["train_seconds"] / max(steps, 1),
        "popularity": metrics["popularity"]["valid"]["ndcg@10"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--out", required=True)
    parser.add_argument("--title", default="")
    parser.add_argument("--labels", help="comma-separated names for the runs (default: their folders)")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [curves(folder) for folder in args.runs]
    labels = args.labels.split(",") if args.labels else [run["name"] for run in runs]
    figure, (loss_axis, step_axis, time_axis) = plt.subplots(1, 3, figsize=(16, 4.2))
    for run, label in zip(runs, labels):
        (line,) = loss_axis.plot(*zip(*run["loss"]), label=label) if run["loss"] else loss_axis.plot([], [])
        color = line.get_color()
        steps, values = zip(*run["valid"])
        step_axis.plot(steps, values, marker="o", color=color, label=label)
        time_axis.plot([step * run["seconds_per_step"] / 60 for step in steps], values, marker="o", color=color)
    for axis in (step_axis, time_axis):
        axis.axhline(runs[0]["popularity"], linestyle="--", color="gray", label="popularity")
        axis.set_ylim(bottom=0)
        axis.set_ylabel("validation NDCG@10")
        axis.grid(alpha=0.3)
    loss_axis.set(xlabel="training step", ylabel="training loss (cross-entropy)", title="training loss")
    loss_axis.set_ylim(bottom=0)
    loss_axis.grid(alpha=0.3)
    step_axis.set(xlabel="training step", title="validation, per step")
    time_axis.set(xlabel="training minutes (validation passes included)", title="validation, per minute")
    step_axis.legend(fontsize=8, loc="lower right")
    loss_axis.legend(fontsize=8, loc="lower left")
    figure.suptitle(args.title)
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
