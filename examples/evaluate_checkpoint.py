"""Evaluate a saved IAM checkpoint (from examples/finetune.py) on its run's split, full-catalog ranking.

python examples/evaluate_checkpoint.py runs/cpu-quick-stacked/checkpoint --split test
"""

from __future__ import annotations

import argparse
import logging

import transformers_iam  # noqa: F401  (registers the Auto classes)
from transformers_iam.experiments import evaluate_checkpoint


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--split", choices=["valid", "test"], default="test")
    parser.add_argument("--keep-history", action="store_true", help="rank history items too")
    args = parser.parse_args(argv)
    return evaluate_checkpoint(args.checkpoint, args.split, exclude_history=False if args.keep_history else None)


if __name__ == "__main__":
    # the library logs its progress and report; show them (and only them) at INFO
    logging.basicConfig(format="%(message)s")
    logging.getLogger("transformers_iam").setLevel(logging.INFO)
    main()
