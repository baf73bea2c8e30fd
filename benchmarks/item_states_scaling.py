"""Item states computed once, on SmolLM2-shaped random layers: packed vs masked intra attention, how cost grows.

    python benchmarks/item_states_scaling.py intra    # (c) 6-layer stacked forward, intra packed vs masked
    python benchmarks/item_states_scaling.py growth   # (d) per-user time and peak memory vs history and catalog
    python benchmarks/item_states_scaling.py all --json-out runs/item_states_scaling.json

Synthetic histories of ml-100k-like items (8 to 24 tokens, 12 prompt and 10 query tokens), batches of 8, the
weights random (`smollm2_like` of benchmarks/speed_memory.py): only shapes matter here. `growth` runs each
(history, catalog) configuration in its own process and reads its peak resident memory with
`resource.getrusage(RUSAGE_SELF).ru_maxrss` above the process's level once the model is built (max so far: the
training step follows serving); serving uses the item cache where it is built (catalogs up to `--cache-limit`
items), else packed intra attention, which computes the same states live; the cache's size beyond that is
extrapolated as catalog tokens x hidden x 4 bytes, and says so. `--quick`: a tiny model, short histories, small
catalogs, all in one process; it checks the script, it measures nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys

import torch
from speed_memory import smollm2_like, timed
from transformers import LlamaConfig

from transformers_iam import IAMConfig, IAMForCausalRecommendation

PROMPT, QUERY, BATCH = 12, 10, 8


def text_config(quick: bool) -> LlamaConfig:
    if not quick:
        return smollm2_like(6)
    return LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2)  # fmt: skip


def synthetic_items(num_items: int, seed: int = 0) -> list[tuple[int, ...]]:
    """Each catalog item's tokens: 8 to 24 of them, as ml-100k titles and genres under SmolLM2's tokenizer."""
    rng = random.Random(seed)
    return [tuple(rng.randrange(49152) for _ in range(rng.randint(8, 24))) for _ in range(num_items)]


def histories(items: list[tuple[int, ...]], num_items: int, seed: int = 1) -> tuple[dict, list[list[int]]]:
    """A left-padded batch of 8 histories of ``num_items`` random catalog items, and each row's item indices."""
    rng = random.Random(seed)
    rows, segments, picked = [], [], []
    for _ in range(BATCH):
        chosen = [rng.randrange(len(items)) for _ in range(num_items)]
        ids, segs = [1] * PROMPT, [0] * PROMPT
        for segment, index in enumerate(chosen, start=1):
            ids, segs = ids + list(items[index]), segs + [segment] * len(items[index])
        rows.append(ids + [2] * QUERY)
        segments.append(segs + [0] * QUERY)
        picked.append(chosen)
    width = max(len(row) for row in rows)
    pad = [width - len(row) for row in rows]
    batch = {
        "input_ids": torch.tensor([[0] * p + row for p, row in zip(pad, rows)]),
        "attention_mask": torch.tensor([[0] * p + [1] * len(row) for p, row in zip(pad, rows)]),
        "item_segment_ids": torch.tensor([[0] * p + row for p, row in zip(pad, segments)]),
    }
    return batch, picked


def intra_packed_vs_masked(args) -> list[dict]:
    """(c) the whole stacked forward (and forward+backward) with the leading intra layers masked vs packed."""
    torch.manual_seed(0)
    masked = IAMForCausalRecommendation(IAMConfig(text_config=text_config(args.quick), num_items=1682))
    packed = IAMForCausalRecommendation(
        IAMConfig(text_config=text_config(args.quick), num_items=1682, intra_implementation="packed")
    )
    packed.load_state_dict(masked.state_dict())
    items, results = synthetic_items(1682), []
    for num_items in args.intra_items:
        batch, _ = histories(items, num_items)
        labels = torch.zeros(BATCH, dtype=torch.long)
        row = {"items": num_items, "tokens": batch["input_ids"].shape[1]}
        for name, model in (("masked", masked), ("packed", packed)):

            def forward(model=model, batch=batch):
                with torch.no_grad():
                    model(**batch)

            def step(model=model, batch=batch, labels=labels):
                model(**batch, labels=labels).loss.backward()
                model.zero_grad(set_to_none=True)

            row[f"{name}_forward_s"], row[f"{name}_step_s"] = timed(forward, args.repeats), timed(step, args.repeats)
        results.append(row)
    print(f"\n### Leading intra layers packed vs masked ({'tiny (--quick)' if args.quick else '6 SmolLM2-shaped'} "
          "stacked layers, batch 8, the whole forward)")  # fmt: skip
    print("| items/history | tokens | masked fwd s | packed fwd s | fwd masked/packed | masked fwd+bwd s | "
          "packed fwd+bwd s | fwd+bwd masked/packed |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['items']} | {r['tokens']} | {r['masked_forward_s']:.3f} | {r['packed_forward_s']:.3f} | "
            f"{r['masked_forward_s'] / r['packed_forward_s']:.2f}x | {r['masked_step_s']:.3f} | "
            f"{r['packed_step_s']:.3f} | {r['masked_step_s'] / r['packed_step_s']:.2f}x |"
        )
    return results


def measure_growth(num_history: int, num_catalog: int, args) -> dict:
    """One (history, catalog) point: a top-10 serving batch and a cpu-quick-frozen AdamW step, time and peak RSS."""
    torch.manual_seed(0)
    config = IAMConfig(text_config=text_config(args.quick), num_items=num_catalog, intra_implementation="packed")
    model = IAMForCausalRecommendation(config)
    layers = model.num_leading_intra_layers
    model.model.get_input_embeddings().requires_grad_(False)
    model.model.layers[:layers].requires_grad_(False)
    model.adapter.item_embeddings.weight.requires_grad_(False)
    items = synthetic_items(num_catalog)
    catalog_tokens = sum(len(tokens) for tokens in items)
    cache_bytes, cache_source = catalog_tokens * config.text_config.hidden_size * 4, "extrapolated"
    if num_catalog <= args.cache_limit:
        cache = model.enable_item_cache(items)
        cache_bytes, cache_source = cache.nbytes, "measured"
    batch, picked = histories(items, num_history)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model.eval()
    serve_s = timed(lambda: model.recommend(**batch, k=10, exclude_item_ids=picked), args.repeats)
    serve_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    labels = torch.zeros(BATCH, dtype=torch.long)

    def step():
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step_s = timed(step, args.repeats)
    step_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(history=num_history, catalog=num_catalog, tokens=batch["input_ids"].shape[1],
                serve_s_per_user=serve_s / BATCH, step_s_per_user=step_s / BATCH,
                serve_peak_mib=(serve_rss - baseline) / 1024, step_peak_mib=(step_rss - baseline) / 1024,
                process_peak_mib=step_rss / 1024,
                model_mib=sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20,
                cache_mib=cache_bytes / 2**20, cache=cache_source,
                item_states="cache" if model.item_cache is not None else "packed")  # fmt: skip


def growth(args) -> list[dict]:
    """(d) each configuration in a fresh process (--quick: in this one), so each peak RSS is its own."""
    points = [(h, args.catalogs[0]) for h in args.histories] + [(args.histories[1], c) for c in args.catalogs[1:]]
    results = []
    for num_history, num_catalog in points:
        if args.quick:
            results.append(measure_growth(num_history, num_catalog, args))
            continue
        options = [arg for arg in sys.argv[1:] if arg not in ("intra", "growth", "all")]
        command = [sys.executable, __file__, "growth", *options, "--measure", f"{num_history}:{num_catalog}"]
        child = subprocess.run(command, capture_output=True, text=True, check=True)
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    where = "one process, peaks are max so far (--quick)" if args.quick else "one process per row"
    print(f"\n### How cost grows (batch 8, {where}; peak RSS above the built model, MiB)")
    print("| history items | catalog | tokens | serve s/user | train s/user | serve peak MiB | train peak MiB | "
          "process peak MiB | model MiB | item states | item cache MiB |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['history']} | {r['catalog']:,} | {r['tokens']} | {r['serve_s_per_user']:.4f} | "
            f"{r['step_s_per_user']:.4f} | {r['serve_peak_mib']:.0f} | {r['step_peak_mib']:.0f} | "
            f"{r['process_peak_mib']:.0f} | {r['model_mib']:.0f} | {r['item_states']} | "
            f"{r['cache_mib']:,.0f} ({r['cache']}) |"
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("section", choices=["intra", "growth", "all"])
    parser.add_argument("--quick", action="store_true", help="tiny model, short histories, small catalogs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--intra-items", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--histories", type=int, nargs="+", default=[10, 20, 50, 100])
    parser.add_argument("--catalogs", type=int, nargs="+", default=[1682, 100_000, 1_000_000])
    parser.add_argument("--cache-limit", type=int, default=1682, help="build the cache up to this many items")
    parser.add_argument("--json-out")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.intra_items, args.histories, args.catalogs = 1, [5], [5, 10], [300, 3000]
        args.cache_limit = 300
    if args.measure:
        num_history, num_catalog = map(int, args.measure.split(":"))
        print(json.dumps(measure_growth(num_history, num_catalog, args)))
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads" + (" (--quick: not a measurement)" * args.quick)
    )
    results = {}
    if args.section in ("intra", "all"):
        results["intra"] = intra_packed_vs_masked(args)
    if args.section in ("growth", "all"):
        results["growth"] = growth(args)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as handle:
            json.dump({"quick": args.quick, **results}, handle, indent=1)


if __name__ == "__main__":
    main()
