"""Serve a trained IAM checkpoint in the browser: search the catalog, build a history, see the model's top-10 beside
popularity's (docs/demo.md). Needs the demo extra: pip install -e ".[demo]" (make demo installs it).

python examples/demo.py                                  # runs/cpu-quick-stacked/checkpoint, what `make run` writes
python examples/demo.py path/to/checkpoint --port 7861   # or a Hub id (org/name), read as from_pretrained reads it

Popularity: the checkpoint's item_popularity.json when it has one; else, for a checkpoint written by the main job
(experiment.json beside the weights), the interactions of its run, read again from the same data files.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import transformers_iam  # noqa: F401  (registers the Auto classes and the item-recommendation pipeline)
from transformers_iam import ItemCatalog
from transformers_iam.core.catalog import CATALOG_FILE_NAME
from transformers_iam.experiments.build import load_data
from transformers_iam.experiments.run_arguments import EXPERIMENT_FILE, RunArguments
from transformers_iam.integrations.demo import (
    DEFAULT_CHECKPOINT,
    HOW_TO_MAKE_A_CHECKPOINT,
    launch_demo,
    load_recommender,
)
from transformers_iam.recsys.baselines import ItemPopularity, load_item_popularity, training_popularity

logger = logging.getLogger("transformers_iam.demo")


def popularity_for(checkpoint: str) -> ItemPopularity | None:
    """Popularity for the page: ``item_popularity.json`` beside the checkpoint, else the training interactions of
    the run that wrote it (its ``experiment.json`` names the data), else ``None`` (the page says it is unknown).

    Example:
        >>> popularity_for("runs/cpu-quick-stacked/checkpoint").description  # doctest: +SKIP
        'the number of times each item occurs in the training interactions of ml-100k ...'
    """
    if not os.path.isfile(os.path.join(checkpoint, CATALOG_FILE_NAME)):
        return None  # a Hub id (only its item_popularity.json can tell), or no catalog (load_recommender says so)
    catalog = ItemCatalog.load(checkpoint)
    saved = load_item_popularity(checkpoint, catalog)
    if saved is not None:
        return saved
    experiment = os.path.join(checkpoint, EXPERIMENT_FILE)
    if not os.path.isfile(experiment):
        return None
    try:
        with open(experiment, encoding="utf-8") as handle:
            run = RunArguments.from_dict(json.load(handle))
        data = load_data(run)  # the same reader and split as the run, so the counts are the ones it trained on
    except (OSError, ValueError) as error:
        logger.warning(f"popularity unknown: the run's data could not be read again ({error})")
        return None
    if data.catalog != catalog:
        logger.warning("popularity unknown: the run's data now gives another catalog than the checkpoint's")
        return None
    return training_popularity(data)  # the counts save_training_popularity would have saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", default=DEFAULT_CHECKPOINT, help="a checkpoint folder or a Hub id")
    parser.add_argument("--host", default="127.0.0.1", help="the address to serve on (default: this machine only)")
    parser.add_argument("--port", type=int, default=None, help="default: the first free port from 7860")
    parser.add_argument("--no-item-cache", action="store_true", help="run every layer live (slower, same lists)")
    args = parser.parse_args(argv)
    if args.checkpoint == DEFAULT_CHECKPOINT and not os.path.exists(DEFAULT_CHECKPOINT):
        # the usual first try, before any training: say how to get a checkpoint rather than serve an error page
        print(f"There is no checkpoint at {DEFAULT_CHECKPOINT} yet. {HOW_TO_MAKE_A_CHECKPOINT}", file=sys.stderr)
        return 2
    try:
        recommender = load_recommender(
            args.checkpoint, popularity=popularity_for(args.checkpoint), item_cache=not args.no_item_cache
        )
    except ValueError as error:  # served as a page that says what is wrong (and printed here)
        print(error, file=sys.stderr)
        recommender = str(error)
    launch_demo(recommender, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    logging.basicConfig(format="%(message)s")
    logging.getLogger("transformers_iam").setLevel(logging.INFO)
    sys.exit(main())
