"""Compare runs side by side: their metrics.json (examples/finetune.py) and SASRec's sasrec_metrics.json as metric
tables (K = 5, 10, 20) and one line of facts per run (command, length, time, memory, paired against popularity).

python benchmarks/results_table.py runs                                   # every run under runs/, runs/sasrec
python benchmarks/results_table.py runs/a runs/b runs/sasrec-ml-1m        # these runs (and SASRec folders)
python benchmarks/results_table.py runs/probes --valid-only               # probes: validation only, test never shown

The final numbers of the docs come from docs/results.json instead (benchmarks/record_results.py). Works with older
metrics.json files too: a field they lack (peak memory, paired comparison, SASRec's epochs) is
left blank.
"""

from __future__ import annotations

import argparse
import glob
import json
import os

from transformers_iam.recsys.metrics import format_metrics_table
from transformers_iam.recsys.results import run_name


def _cell(value, fmt: str = "{}") -> str:
    return "" if value is None else fmt.format(value)


def _minutes(seconds) -> str:
    return "" if seconds is None else f"{seconds / 60:.1f} min"


def _run_length(config: dict) -> str:
    # --max_steps overrides the preset's epochs: a budgeted run is as long as its steps
    training = config["training"]
    if (training.get("max_steps") or -1) > 0:
        return f"{training['max_steps']} steps"
    return _cell(training.get("num_train_epochs", 1.0), "{} epochs")


def _paths(folders: list[str]) -> tuple[list[str], list[str]]:
    """The metrics.json of the runs and the sasrec_metrics.json of the SASRec runs named by ``folders`` (a run or
    SASRec folder itself, or a folder holding runs, whose ``sasrec`` folder is then read too)."""
    runs, sasrec = [], []
    for folder in folders:
        if os.path.isfile(os.path.join(folder, "metrics.json")):
            runs.append(os.path.join(folder, "metrics.json"))
        elif os.path.isfile(os.path.join(folder, "sasrec_metrics.json")):
            sasrec.append(os.path.join(folder, "sasrec_metrics.json"))
        else:
            runs += sorted(glob.glob(os.path.join(folder, "*", "metrics.json")))
            if os.path.isfile(os.path.join(folder, "sasrec", "sasrec_metrics.json")):
                sasrec.append(os.path.join(folder, "sasrec", "sasrec_metrics.json"))
            if not os.path.isdir(folder):
                raise SystemExit(f"results_table.py: {folder}: no such run folder")
    return runs, sasrec


def collect(*folders: str, split_shown: str = "test") -> dict:
    """The tables' rows from the runs in ``folders`` (see :func:`_paths`): test and valid metrics, and one line of
    facts per run."""
    test_rows, valid_rows, runs = {}, {}, []
    loaded = []
    run_paths, sasrec_paths = _paths(list(folders) or ["runs"])
    for path in run_paths:
        with open(path) as handle:
            results = json.load(handle)
        if "config" in results:
            loaded.append((os.path.basename(os.path.dirname(path)), results))
    names = [run_name(results["config"]["model"]) for _, results in loaded]
    for (run_folder, results), name in zip(loaded, names):
        if names.count(name) > 1:  # runs of one configuration (or one layout): each named by its folder
            name = f"{name} ({run_folder})"
        test_rows[name], valid_rows[name] = results["test"], results["valid"]
        for split, metrics in results.get("popularity", {}).items():
            (test_rows if split == "test" else valid_rows)["popularity"] = metrics
        paired = results.get("paired_vs_popularity", {}).get(split_shown, {}).get("ndcg@10")
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
                f"{split_shown} NDCG@10 vs popularity (paired)": ""
                if paired is None
                else f"{paired['difference']:+.4f} [{paired['interval'][0]:+.4f}, {paired['interval'][1]:+.4f}], "
                f"p = {paired['p_value']:.3g}",
            }
        )
    for sasrec in sasrec_paths:
        with open(sasrec) as handle:
            metrics = json.load(handle)
        training = metrics.get("training", {})
        name = "SASRec (RecBole 1.2.1" + (f", {training['epochs_run']} epochs" if training.get("epochs_run") else "")
        name += f", {os.path.basename(os.path.dirname(sasrec))})" if len(sasrec_paths) > 1 else ")"
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
                "wall": _minutes(training.get("wall_seconds"))
                + (" (scoring a saved checkpoint only)" if training.get("interrupted") else ""),
                "peak memory": "",
                "trained parameters": "",
                f"{split_shown} NDCG@10 vs popularity (paired)": "",
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


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", default=["runs"])
    parser.add_argument("--valid-only", action="store_true", help="probes: print validation only, never test")
    args = parser.parse_args(argv)
    tables = collect(*args.folders, split_shown="valid" if args.valid_only else "test")
    parts = [] if args.valid_only else [
        "Test split (reported once, on the checkpoint chosen on validation):\n", format_metrics_table(tables["test"]),
    ]  # fmt: skip
    parts += [
        "\nValidation split (used for checkpoint selection):\n",
        format_metrics_table(tables["valid"]),
        "",
        format_runs_table(tables["runs"]),
    ]
    text = "\n".join(parts)
    print(text)
    return text


if __name__ == "__main__":
    main()
