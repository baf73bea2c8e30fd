"""The generative IAM variant on MovieLens-100k: TRL's SFTTrainer learns to write the next movie's text.

    python examples/finetune_trl.py                      # CPU-sized default: 6 layers, 40 steps of 4, 100 test users
    python examples/finetune_trl.py --num-layers 30 --max-steps 2000 --eval-users 943   # a GPU

The prompt is the same as the ranking head's (history items as segments); the completion is the
target item's text + EOS, one more segment. Decoding is a beam search constrained to the catalog
(every answer is a real item), and its beam list is ranked with the same metric code (full
catalog; an item outside the beams ranks last). Writes metrics.json and report.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

import torch
from tqdm.auto import tqdm
from trl import SFTConfig, SFTTrainer

from transformers_iam.core.configuration_iam import layer_types_for_layout
from transformers_iam.core.loading import load_pretrained_decoder
from transformers_iam.experiments.build import backbone_location, load_data, load_tokenizer
from transformers_iam.experiments.run_arguments import RunArguments
from transformers_iam.integrations.generative import (
    CatalogTrie,
    GenerativeIAMCollator,
    constrained_beam_search,
    enable_generative_iam,
    rank_in_beams,
)
from transformers_iam.recsys.metrics import format_metrics_table, metrics_from_ranks, protocol_line


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="runs/trl-generative")
    parser.add_argument("--num-layers", type=int, default=6)
    parser.add_argument("--layout", default="stacked", choices=["stacked", "alternating", "hatllm", "vanilla"])
    parser.add_argument("--max-history", type=int, default=10)
    parser.add_argument("--train-examples-per-user", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--eval-users", type=int, default=100, help="first N test users (943 = all)")
    parser.add_argument("--num-beams", type=int, default=20)
    parser.add_argument("--keep-history", action="store_true")
    return parser.parse_args(argv)


def build(args: argparse.Namespace):
    """The data, the tokenizer, the generative collator and the causal LM with item-aware layers."""
    run = RunArguments.from_preset(
        None, max_history=args.max_history, train_examples_per_user=args.train_examples_per_user
    )
    data = load_data(run)
    print(data.describe())
    tokenizer = load_tokenizer(run.model)
    collator = GenerativeIAMCollator(
        tokenizer,
        data.catalog,
        max_length=run.data.max_length,
        max_item_tokens=run.data.max_item_tokens,
        max_history_items=args.max_history,
    )
    path, gguf_file = backbone_location(run.model)
    model = load_pretrained_decoder(path, gguf_file=gguf_file, num_layers=args.num_layers, causal_lm=True)
    enable_generative_iam(model, layer_types_for_layout(args.layout, model.config.num_hidden_layers))
    model.get_input_embeddings().weight.requires_grad_(False)  # tied with the LM head: keep the vocabulary as is
    print(f"causal LM with item-aware layers {model.config.iam_layer_types}")
    return data, tokenizer, collator, model


def train(args: argparse.Namespace, model, tokenizer, collator, train_dataset) -> float:
    """TRL's SFTTrainer on the item texts as completions; returns the training seconds."""
    sft_args = SFTConfig(
        output_dir=os.path.join(args.output_dir, "trainer"),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        logging_steps=max(1, args.max_steps // 10),
        dataset_kwargs={"skip_prepare_dataset": True},  # the collator renders and tokenizes item by item
        remove_unused_columns=False,
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),
    )
    trainer = SFTTrainer(
        model=model, args=sft_args, train_dataset=train_dataset, data_collator=collator, processing_class=tokenizer
    )
    started = time.time()
    trainer.train()
    return time.time() - started


def evaluate(args: argparse.Namespace, model, collator, data) -> tuple[dict, int]:
    """Constrained beam search for the first ``--eval-users`` test users, ranked with the metric code; returns the
    metrics and the number of users."""
    trie = CatalogTrie.from_collator(collator)
    users = data.test.select(range(min(args.eval_users, len(data.test))))
    ranks = []
    for example in tqdm(users, desc="constrained beam search (test)"):
        history = data.catalog.indices_of(example["history"]) if not args.keep_history else ()
        finished = constrained_beam_search(
            model, collator, example, trie, num_beams=args.num_beams, exclude_item_indices=history
        )
        ranks.append(rank_in_beams(finished, data.catalog.index_of(example["target"]), len(data.catalog)))
    return metrics_from_ranks(ranks), len(users)


def write(args: argparse.Namespace, results: dict, num_train: int) -> str:
    """metrics.json and report.md in ``--output-dir``; returns the report."""
    report = "\n".join(
        [
            "# Generative IAM (TRL SFTTrainer) on ml-100k",
            "",
            results["protocol"] + ".",
            "",
            format_metrics_table({"IAM generative, test": results["test"]}),
            "",
            f"- {args.max_steps} steps of {args.batch_size} on {num_train} training examples; "
            f"layers {results['layer_types']}",
            f"- training {results['train_seconds']} s, wall {results['wall_seconds']} s",
            f"- command: `{results['command']}`",
            "",
        ]
    )
    with open(os.path.join(args.output_dir, "metrics.json"), "w") as handle:
        json.dump(results, handle, indent=1)
    with open(os.path.join(args.output_dir, "report.md"), "w") as handle:
        handle.write(report)
    return report


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.time()
    os.makedirs(args.output_dir, exist_ok=True)
    data, tokenizer, collator, model = build(args)
    train_seconds = train(args, model, tokenizer, collator, data.train)
    metrics, num_users = evaluate(args, model, collator, data)
    checkpoint = os.path.join(args.output_dir, "checkpoint")
    model.save_pretrained(checkpoint)  # config.iam_layer_types records the layers for enable_generative_iam
    collator.save_pretrained(checkpoint)
    data.catalog.save(checkpoint)
    protocol = protocol_line(not args.keep_history, "test") + (
        f"; generative: beam search ({args.num_beams} beams) constrained to the catalog, items outside the beams "
        f"rank last; first {num_users} of {len(data.test)} test users"
    )
    results = {
        "protocol": protocol,
        "test": metrics,
        "layer_types": list(model.config.iam_layer_types),
        "dataset": data.statistics,
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.time() - started, 1),
        "command": " ".join(shlex.quote(p) for p in ["python", "examples/finetune_trl.py", *(argv or sys.argv[1:])]),
    }
    print(write(args, results, len(data.train)))
    return results


if __name__ == "__main__":
    main()
