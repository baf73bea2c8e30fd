"""Collect runs/*/metrics.json (examples/finetune.py) and runs/sasrec/sasrec_metrics.json into docs/results.md tables.

python benchmarks/results_table.py runs

Works with older metrics.json files too: a field they lack (peak memory, paired comparison, SASRec's epochs) is
left blank.
"""

from __future__ import annotations

import glob
import json
import os
import sys

from transformers_iam.recsys.metrics import format_metrics_table
from transformers_iam.recsys.results import run_name


def _cell(value, fmt: str = "{}") -> str:
    return "" if value is None else fmt.format(value)


def _minutes(seconds) -> str:
    return "" if seconds is None else f"{seconds / 60:.1f} min"


def _run_length(config: dict) -> str:
    # --max-steps overrides the preset's epochs: a budgeted run is as long as its steps
    if (config.get("max_steps") or -1) > 0:
        return f"{config['max_steps']} steps"
    return _cell(config.get("epochs"), "{} epochs")


def collect(folder: str = "runs") -> dict:
    """The tables' rows from every run under ``folder``: test and valid metrics, and one line of facts per run."""
    test_rows, valid_rows, runs = {}, {}, []
    loaded = []
    for path in sorted(glob.glob(os.path.join(folder, "*", "metrics.json"))):
        with open(path) as handle:
            results = json.load(handle)
        if "config" in results:
            loaded.append((os.path.basename(os.path.dirname(path)), results))
    names = [run_name(results["config"]) for _, results in loaded]
    for (run_folder, results), name in zip(loaded, names):
        if names.count(name) > 1:  # runs of one configuration (or one layout): each named by its folder
            name = f"{name} ({run_folder})"
        test_rows[name], valid_rows[name] = results["test"], results["valid"]
        for split, metrics in results.get("popularity", {}).items():
            (test_rows if split == "test" else valid_rows)["popularity"] = metrics
        paired = results.get("paired_vs_popularity", {}).get("test", {}).get("ndcg@10")
        runs.append(
            {
                "run": name,
                "command": f"`{results['config']['command']}`",
                "preset": results["config"].get("preset"),
                "length": _run_length(results["config"]),
                "best": f"step {results['best_step']}",
                "training": _minutes(results.get("train_seconds")),
                "wall": _minutes(results.get("wall_seconds")),
                "peak memory": _cell(results.get("peak_rss_mib"), "{:.0f} MiB RSS")
                + _cell(results.get("peak_gpu_mib"), ", {:.0f} MiB GPU"),
                "trained parameters": f"{results['model']['trained_parameters']:,}",
                "test NDCG@10 vs popularity (paired)": ""
                if paired is None
                else f"{paired['difference']:+.4f} [{paired['interval'][0]:+.4f}, {paired['interval'][1]:+.4f}], "
                f"p = {paired['p_value']:.3g}",
            }
        )
    sasrec = os.path.join(folder, "sasrec", "sasrec_metrics.json")
    if os.path.exists(sasrec):
        with open(sasrec) as handle:
            metrics = json.load(handle)
        training = metrics.get("training", {})
        name = "SASRec (RecBole 1.2.1" + (f", {training['epochs_run']} epochs" if training.get("epochs_run") else "")
        name += ")"
        test_rows[name], valid_rows[name] = metrics["SASRec, test"], metrics["SASRec, valid"]
        best = training.get("best_epoch")
        runs.append(
            {
                "run": name,
                "command": "`benchmarks/sasrec/` (export.py, train_score.py, rank.py)",
                "preset": "",
                "length": _cell(training.get("epochs_run"), "{} epochs")
                + _cell(training.get("stopping_step"), " (early stopping, patience {})"),
                "best": "" if best is None else f"epoch {best}",
                "training": _minutes(training.get("train_seconds")),
                "wall": _minutes(training.get("wall_seconds")),
                "peak memory": "",
                "trained parameters": "",
                "test NDCG@10 vs popularity (paired)": "",
            }
        )
    return {"test": test_rows, "valid": valid_rows, "runs": runs}


def format_runs_table(runs: list[dict]) -> str:
    if not runs:
        return ""
    columns = list(runs[0])
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(str(run[column]) for column in columns) + " |" for run in runs]
    return "\n".join(lines)


def main(folder: str = "runs") -> str:
    tables = collect(folder)
    text = "\n".join(
        [
            "Test split (reported once, on the checkpoint chosen on validation):\n",
            format_metrics_table(tables["test"]),
            "\nValidation split (used for checkpoint selection):\n",
            format_metrics_table(tables["valid"]),
            "",
            format_runs_table(tables["runs"]),
        ]
    )
    print(text)
    return text


if __name__ == "__main__":
    main(*sys.argv[1:])
