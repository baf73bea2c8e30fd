"""The training head with the full cross-entropy vs the sampled softmax, side by side: time of one step (scores, loss,
backward) and peak memory, at catalog sizes a real recommender has.

    python benchmarks/sampled_loss.py                                   # 10k, 100k and 1M items, 256 negatives
    python benchmarks/sampled_loss.py --num-items 20000 --targets 800 --negatives 1024
    python benchmarks/sampled_loss.py --sparse    # sampled: AdamW on dense gradients vs LazyAdamW on sparse ones

Each (catalog, loss) runs in its own process (peak RSS is a process's high-water mark) on the same states and targets:
SmolLM2's width (576), a batch's targets (the default preset reads 16 users x up to 50 items). The adapter's rows and
their gradient are there in both; what the sampled loss removes is the [targets x catalog] score matrix and its
gradient. Prints the ratios sampled / full.

With ``--sparse`` both sides use the sampled loss and a step includes the optimizer's update: dense item gradients
and ``torch.optim.AdamW`` (the library's default) against ``IAMConfig.sparse_item_gradients`` and ``LazyAdamW``, which
touch only the rows the step read. Prints the ratios sparse / dense.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from transformers import LlamaConfig

from transformers_iam import IAMConfig, LazyAdamW
from transformers_iam.core.adapter import IAMRecommendationAdapter
from transformers_iam.core.losses import catalog_cross_entropy, sampled_softmax_cross_entropy

HIDDEN = 576


def measure(num_items: int, targets: int, negatives: int | None, steps: int, optimizer: str | None = None) -> dict:
    """One process: the median step time and the peak RSS above the process after building the adapter.
    ``optimizer``: ``"dense"`` (AdamW) or ``"sparse"`` (sparse item gradients, LazyAdamW) adds its update to a step."""
    torch.manual_seed(0)
    config = IAMConfig(
        text_config=LlamaConfig(hidden_size=HIDDEN, num_hidden_layers=2),
        num_items=num_items,
        num_sampled_negatives=negatives,
        sparse_item_gradients=optimizer == "sparse",
    )
    adapter = IAMRecommendationAdapter(config)
    update = None
    if optimizer is not None:
        update = (LazyAdamW if optimizer == "sparse" else torch.optim.AdamW)(adapter.parameters(), lr=1e-3)
    states = torch.randn(targets, HIDDEN)
    labels = torch.randint(num_items, (targets,))
    log_frequency = torch.zeros(num_items)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(steps):
        adapter.zero_grad(set_to_none=update is not None)
        start = time.perf_counter()
        if negatives is None:
            loss = catalog_cross_entropy(adapter, adapter(states), None, labels, None, num_items)
        else:
            loss = sampled_softmax_cross_entropy(adapter, states, labels, negatives, log_frequency)
        loss.backward()
        if update is not None:
            update.step()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": sorted(times)[len(times) // 2], "peak_mb": peak / 1024, "extra_mb": (peak - base) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--targets", type=int, default=800)
    parser.add_argument("--negatives", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--sparse", action="store_true", help="sampled: dense AdamW vs sparse LazyAdamW steps")
    parser.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        num_items, negatives = int(args._child[0]), None if args._child[1] == "full" else int(args._child[1])
        optimizer = None if args._child[2] == "none" else args._child[2]
        print(json.dumps(measure(num_items, args.targets, negatives, args.steps, optimizer)))
        return
    if args.sparse:
        compare_sparse(args)
        return
    print(
        f"training head, {args.targets} targets x {HIDDEN} wide, median of {args.steps} steps, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        "| items | full CE step | sampled step | time ratio | full CE peak RSS | sampled peak RSS "
        "| extra memory ratio |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for num_items in args.num_items:
        rows = {}
        for loss in ("full", str(args.negatives)):
            command = [sys.executable, __file__, "--targets", str(args.targets), "--steps", str(args.steps)]
            rows[loss] = child([*command, "--_child", str(num_items), loss, "none"])
        full, sampled = rows["full"], rows[str(args.negatives)]
        print(
            f"| {num_items:,} | {full['seconds']:.3f} s | {sampled['seconds']:.3f} s | "
            f"{sampled['seconds'] / full['seconds']:.3f} | {full['peak_mb']:,.0f} MB | {sampled['peak_mb']:,.0f} MB | "
            f"{sampled['extra_mb'] / max(full['extra_mb'], 1):.3f} |",
            flush=True,
        )
    print(
        f"sampled: {args.negatives} distinct negatives drawn by frequency (uniform here), logQ-corrected "
        "(IAMConfig.num_sampled_negatives)"
    )


def child(command: list[str]) -> dict:
    output = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def compare_sparse(args) -> None:
    print(
        f"training head with the sampled loss ({args.negatives} negatives), {args.targets} targets x {HIDDEN} wide, "
        f"a step = scores, loss, backward and the optimizer's update; median of {args.steps} steps, "
        f"{torch.get_num_threads()} threads"
    )
    print("| items | dense + AdamW step | sparse + LazyAdamW step | time ratio | dense peak RSS | sparse peak RSS |")
    print("| --- | --- | --- | --- | --- | --- |")
    for num_items in args.num_items:
        command = [sys.executable, __file__, "--targets", str(args.targets), "--steps", str(args.steps)]
        dense, sparse = (
            child([*command, "--_child", str(num_items), str(args.negatives), optimizer])
            for optimizer in ("dense", "sparse")
        )
        print(
            f"| {num_items:,} | {dense['seconds']:.3f} s | {sparse['seconds']:.3f} s | "
            f"{sparse['seconds'] / dense['seconds']:.3f} | {dense['peak_mb']:,.0f} MB | {sparse['peak_mb']:,.0f} MB |",
            flush=True,
        )


if __name__ == "__main__":
    main()
