"""IAM vs the plain backbone, side by side in one run: forward (and forward+backward) time and peak memory.

    python benchmarks/speed_memory.py --num-layers 6 --batch-size 8 --seq-len 192

Same shapes, same inputs (ml-100k-like item spans), each model in its own process; prints the ratios to
the plain backbone. On CPU the
extra cost of IAM is building the masks and SDPA running with an explicit mask instead of
`is_causal`; block-sparse kernels (flex attention, GPU) are where IAM could be cheaper.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from transformers import AutoModel, LlamaConfig

from transformers_iam import IAMConfig, IAMForCausalRecommendation


def smollm2_like(num_layers: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=num_layers,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
    )


def inputs(batch_size: int, seq_len: int, item_len: int = 17):
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, 49152, (batch_size, seq_len), generator=generator)
    segments = torch.zeros(batch_size, seq_len, dtype=torch.long)
    for start in range(12, seq_len - 10, item_len):  # 12 prompt tokens, items of 17 tokens, a 10-token query
        segments[:, start : min(start + item_len, seq_len - 10)] = 1 + (start - 12) // item_len
    return input_ids, torch.ones_like(input_ids), segments


def timed(function, repeats: int) -> float:
    function()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats


def measure(which: str, args) -> dict:
    """Runs in its own process, so its peak resident memory is its own."""
    torch.manual_seed(0)
    text_config = smollm2_like(args.num_layers)
    if which == "plain":
        model, extra = AutoModel.from_config(text_config, attn_implementation="sdpa").eval(), {}
    else:
        iam = IAMForCausalRecommendation(IAMConfig(text_config=text_config, num_items=1682, iam_layout=which)).eval()
        model, extra = iam.model, {"item_segment_ids": inputs(args.batch_size, args.seq_len)[2]}
    input_ids, attention_mask, _ = inputs(args.batch_size, args.seq_len)
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def forward():
        with torch.no_grad():
            model(input_ids=input_ids, attention_mask=attention_mask, **extra)

    def train_step():
        model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state.mean().backward()
        model.zero_grad(set_to_none=True)

    forward_seconds = timed(forward, args.repeats)
    forward_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step_seconds = timed(train_step, 2)
    step_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "forward_s": forward_seconds,
        "step_s": step_seconds,
        "forward_peak_mib": (forward_rss - baseline_rss) / 1024,
        "step_peak_mib": (step_rss - baseline_rss) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-layers", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args)))
        return
    rows = {}
    for which in ("plain", "vanilla", "stacked", "hatllm"):
        child = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--measure", which], capture_output=True, text=True, check=True
        )
        rows[which] = json.loads(child.stdout.strip().splitlines()[-1])
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.num_layers} SmolLM2-135M-shaped layers, "
        f"batch {args.batch_size} x {args.seq_len} tokens; each row in its own process (peak RSS above its baseline)"
    )
    print(
        "| backbone | forward s | fwd+bwd s | forward peak MiB | fwd+bwd peak MiB | forward / plain | fwd+bwd / plain |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    plain = rows["plain"]
    names = {
        "plain": "plain LlamaModel (sdpa)",
        "vanilla": "IAM vanilla (iam_sdpa, all full)",
        "stacked": "IAM stacked (intra/inter)",
        "hatllm": "IAM hatllm (intra/full/inter)",
    }
    for which, row in rows.items():
        print(
            f"| {names[which]} | {row['forward_s']:.3f} | {row['step_s']:.3f} | {row['forward_peak_mib']:.0f} | "
            f"{row['step_peak_mib']:.0f} | {row['forward_s'] / plain['forward_s']:.2f}x | "
            f"{row['step_s'] / plain['step_s']:.2f}x |"
        )


if __name__ == "__main__":
    main()
