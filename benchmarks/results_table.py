"""Collect runs/*/metrics.json (examples/finetune.py) and runs/sasrec/sasrec_metrics.json into one markdown table.

python benchmarks/results_table.py runs
"""

from __future__ import annotations

import glob
import json
import os
import sys

from transformers_iam.recsys.metrics import format_metrics_table
from transformers_iam.recsys.results import run_name


def main(folder: str = "runs") -> None:
    test_rows, valid_rows, notes = {}, {}, []
    for path in sorted(glob.glob(os.path.join(folder, "*", "metrics.json"))):
        with open(path) as handle:
            results = json.load(handle)
        if "config" not in results:
            continue
        name = run_name(results["config"])
        test_rows[name], valid_rows[name] = results["test"], results["valid"]
        for split, metrics in results.get("popularity", {}).items():
            (test_rows if split == "test" else valid_rows)["popularity"] = metrics
        notes.append(
            f"- {name}: best validation step {results['best_step']}, training {results['train_seconds']} s, "
            f"wall {results['wall_seconds']} s, {results['model']['trained_parameters']:,} parameters trained, "
            f"layers {results['model']['layer_types']}; `{results['config']['command']}`"
        )
    sasrec = os.path.join(folder, "sasrec", "sasrec_metrics.json")
    if os.path.exists(sasrec):
        with open(sasrec) as handle:
            metrics = json.load(handle)
        test_rows["SASRec (RecBole)"], valid_rows["SASRec (RecBole)"] = (
            metrics["SASRec, test"],
            metrics["SASRec, valid"],
        )
    print("Test split (reported once, on the checkpoint chosen on validation):\n")
    print(format_metrics_table(test_rows))
    print("\nValidation split (used for checkpoint selection):\n")
    print(format_metrics_table(valid_rows))
    print()
    print("\n".join(notes))


if __name__ == "__main__":
    main(*sys.argv[1:])
