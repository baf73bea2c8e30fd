"""Evaluate a saved IAM checkpoint (from examples/finetune.py) on its run's split, full-catalog ranking.

    python examples/evaluate.py runs/cpu-quick-stacked/checkpoint --split test
"""

from __future__ import annotations

import argparse

import transformers_iam  # noqa: F401  (registers the Auto classes)
from transformers_iam.experiment import evaluate_checkpoint


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--split", choices=["valid", "test"], default="test")
    parser.add_argument("--keep-history", action="store_true", help="rank history items too")
    args = parser.parse_args(argv)
    return evaluate_checkpoint(args.checkpoint, args.split, exclude_history=False if args.keep_history else None)


if __name__ == "__main__":
    main()
