"""Fine-tune and evaluate IAM on MovieLens-100k (or MovieLens-1M, or your own data) with a pretrained LLM.

    python examples/finetune.py                                    # cpu-quick preset: ~4 min on 2 CPU cores
    python examples/finetune.py --preset cpu-full                  # 3 inter layers, 10 epochs: ~14 min
    python examples/finetune.py --preset cpu-ml-1m                 # MovieLens-1M: ~1 hour
    python examples/finetune.py --preset gpu                       # the whole backbone, token-level, on a GPU
    python examples/finetune.py --preset cpu-quick-token-level --iam_layout vanilla   # the same LLM without IAM
    python examples/finetune.py --num_train_epochs 8 --item_cache false              # any field, as a flag
    python examples/finetune.py --config my_run.yaml               # the same fields in a YAML or JSON file
    python examples/finetune.py --resume true                      # continue an interrupted run

Your own data, e.g. MovieLens' ratings.csv and movies.csv (CSV, JSONL or Parquet; any column names):

    python examples/finetune.py --interactions_file ratings.csv --catalog_file movies.csv \\
        --user_column userId --item_column movieId --catalog_item_column movieId \\
        --text_template "{title} | {genres}" --list_fields genres --list_separator "|"

Every flag is a field of transformers_iam.experiments.arguments (model, data, and transformers' TrainingArguments),
written --field_name or --field-name; `--help` lists them with their documentation. Writes to --output_dir (default
runs/<preset>-<layout>): checkpoint/ (AutoModel.from_pretrained after `import transformers_iam`), metrics.json,
report.md and validation_ndcg10.png.
"""

from __future__ import annotations

import argparse
import logging
import sys

import transformers_iam  # noqa: F401  (registers the Auto classes)
from transformers_iam.experiments import RunArguments, run_experiment
from transformers_iam.experiments.run_arguments import argument_parser, parse_command_line
from transformers_iam.recsys.data import DataFormatError


def parse_args(argv: list[str] | None = None) -> RunArguments:
    parser = argument_parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    return parse_command_line(sys.argv[1:] if argv is None else list(argv), parser)


def main(argv: list[str] | None = None) -> dict:
    return run_experiment(parse_args(argv))


def cli(argv: list[str] | None = None) -> int:
    """The command line: ``main``, with a data error (a file, line and column to fix, or a missing data file) told in
    one line, ``error: ...``, and exit status 2, as argparse does for a bad flag; any other error keeps its
    traceback."""
    run = parse_args(argv)
    try:
        run_experiment(run)
    except (DataFormatError, NotImplementedError) as error:
        message = str(error)
        if run.data.interactions_file and "missing required column" in message:
            message += "; name your columns with --user_column, --item_column, --time_column, --catalog_item_column"
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    # the library logs its progress and report; show them (and only them) at INFO
    logging.basicConfig(format="%(message)s")
    logging.getLogger("transformers_iam").setLevel(logging.INFO)
    sys.exit(cli())
