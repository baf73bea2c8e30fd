"""The GPU run of the paper's comparison: a speed table, then IAM (stacked) and the same LLM without IAM (vanilla).

On a machine with a 64 MiB-per-command limit (this project's; docs/gpu.md), two commands sent back to back:

    python3 benchmarks/gpu/run_gpu.py --part 1 --stage gpu_stage/part1 --out $OUT   # install, speed table
    python3 benchmarks/gpu/run_gpu.py --part 2 --stage gpu_stage/part2 --out $OUT   # join weights, train both

On any other CUDA machine, with both stage folders present: ``--part all --stage gpu_stage --out results``.
``--dry-run`` does the same in seconds with the tiny stand-in weights that ``prepare.py --dry-run`` staged, on the GPU
when there is one (a cheap check of the GPU path before the real run), else on the CPU.

Part 1 installs the staged wheels into ``<state>/site``, keeps the data and the first weight part in
``<state>``, and measures forward+backward tokens/s and peak memory of the 30-layer SmolLM2 shape in
bf16 on 50-item histories for each attention backend. Part 2 joins the weights (sha256 checked), sizes
``max_steps`` from the time left and the measured speed, and runs the ``gpu`` preset for ``stacked`` and
``vanilla`` at the same number of steps. What comes back (at most 8 files): ``speed.md``, ``speed.json``,
``part1.log``; ``stacked-metrics.json``, ``vanilla-metrics.json``, ``summary.md``, ``part2.log``.

This file imports only the standard library at the top: the workloads run in a child process whose
``PYTHONPATH`` starts with the freshly installed wheels (transformers 5.24 over the image's 5.17).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from staging import join_parts  # noqa: E402

DEFAULT_STATE = "/tmp/iam-gpu"  # survives between the two commands while the machine stays warm
SPEED_FILE = "speed.json"
NUM_ITEMS = 1682  # ml-100k's catalog: the adapter's output size in the speed table
# The gpu preset's shapes, for the step-time estimate: 32 examples of 20 items (~17 tokens each) + prompt and query.
GPU_BATCH, GPU_TOKENS_PER_EXAMPLE = 32, 12 + 20 * 17 + 10
RUN_OVERHEAD_S = 120  # per training run: GGUF load, item-text init, 7 validation/test passes, checkpoint save


# -- file handling (stdlib) ----------------------------------------------------------------------
def read_manifest(stage: str) -> dict:
    with open(os.path.join(stage, "manifest.json")) as handle:
        return json.load(handle)


def install_wheels(stage: str, state: str) -> None:
    """Install every staged wheel into ``<state>/site`` (no index, no dependency resolution: the image has the rest)."""
    wheels = sorted(glob.glob(os.path.join(stage, "wheels", "*.whl")))
    site = os.path.join(state, "site")
    shutil.rmtree(site, ignore_errors=True)
    print(f"installing {len(wheels)} wheels into {site}: {[os.path.basename(w) for w in wheels]}", flush=True)
    if wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
            + ["--no-cache-dir", "--upgrade", "--target", site, *wheels],
            check=True,
        )


def keep_part(stage: str, state: str, part: int) -> None:
    """Copy this command's weight part (and, with part 1, the data) to the state folder."""
    manifest = read_manifest(stage)
    name = manifest["parts"][part - 1]["name"]
    os.makedirs(os.path.join(state, "weights"), exist_ok=True)
    shutil.copy(os.path.join(stage, "weights", name), os.path.join(state, "weights", name))
    shutil.copy(os.path.join(stage, "manifest.json"), os.path.join(state, "manifest.json"))
    if part == 1:
        shutil.copytree(os.path.join(stage, "ml-100k"), os.path.join(state, "ml-100k"), dirs_exist_ok=True)


def join_weights(state: str) -> tuple[str, str | None]:
    """Join the weight parts; returns (backbone folder, gguf file name or None)."""
    manifest = read_manifest(state)
    folder = os.path.join(state, "weights")
    target = os.path.join(folder, manifest["file"])
    join_parts(manifest, [os.path.join(folder, part["name"]) for part in manifest["parts"]], target)
    print(f"joined {manifest['file']} ({manifest['size']:,} bytes, sha256 ok)", flush=True)
    if target.endswith(".tar"):  # the dry run's stand-in: a small HF checkpoint
        with tarfile.open(target) as tar:
            tar.extractall(folder, filter="data")
        return os.path.join(folder, os.path.basename(target)[: -len(".tar")]), None
    return folder, manifest["file"]


def run_worker(task: str, args: argparse.Namespace, log_path: str, extra: list[str] | None = None) -> None:
    """Run a workload in a child process with the installed wheels first on the path; its output goes to the log."""
    env = dict(os.environ)
    site = os.path.join(args.state, "site")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    command = [sys.executable, os.path.abspath(__file__), "--worker", task, "--state", args.state, "--out", args.out]
    command += ["--deadline", str(args.deadline)] + (["--dry-run"] if args.dry_run else []) + (extra or [])
    with open(log_path, "a") as log:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(line)
        if process.wait() != 0:
            raise SystemExit(f"{task} failed (exit {process.returncode}); see {log_path}")


# -- workloads (child process: torch, transformers, this project) -------------------------------
def _speed_setups():
    """Named backends of the speed table: (name, iam_layout, attn_implementation, needs segment ids, extra setup)."""

    def packed(model) -> None:
        model.config.intra_implementation = "packed"  # the leading intra layers per item, no mask

    return [
        ("plain causal (sdpa)", "vanilla", "sdpa", False, None),
        ("iam_sdpa", "stacked", "sdpa", True, None),
        ("iam_flex", "stacked", "flex_attention", True, None),
        ("packed intra (sdpa)", "stacked", "sdpa", True, packed),
    ]


def speed_inputs(batch_size: int, num_items: int, item_len: int, vocab_size: int, device):
    """12 prompt tokens, ``num_items`` items of ``item_len`` tokens, a 10-token query (no padding)."""
    import torch

    seq_len = 12 + num_items * item_len + 10
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator)
    segments = torch.zeros(batch_size, seq_len, dtype=torch.long)
    for item in range(num_items):
        segments[:, 12 + item * item_len : 12 + (item + 1) * item_len] = item + 1
    labels = torch.randint(0, NUM_ITEMS, (batch_size,), generator=generator)
    return {key: value.to(device) for key, value in dict(input_ids=input_ids, labels=labels).items()}, segments.to(
        device
    )


def time_training_step(model, kwargs: dict, warmup: int, steps: int) -> float:
    """Mean seconds of forward + backward over ``steps``, after ``warmup`` steps (torch.compile happens there)."""
    import torch

    cuda = torch.cuda.is_available()

    def step():
        model(**kwargs).loss.backward()
        model.zero_grad(set_to_none=True)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def speed_shape(args: argparse.Namespace):
    """The speed table's backbone config and ``(batch_size, history items, item tokens, warmup, steps)``: SmolLM2-135M's
    shape (the values of random weights do not change the speed), or a tiny one for ``--dry-run``."""
    from transformers import LlamaConfig

    if args.dry_run:
        text_config = LlamaConfig(
            vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
        )
        return text_config, (2, 5, 6, 1, 2)
    text_config = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        tie_word_embeddings=True,
    )
    return text_config, (args.speed_batch_size, 50, 17, 3, 10)


def speed_table(args: argparse.Namespace) -> list[dict]:
    import torch

    from transformers_iam import IAMConfig, IAMForCausalRecommendation

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    text_config, (batch_size, num_items, item_len, warmup, steps) = speed_shape(args)
    dtype = torch.bfloat16 if cuda else torch.float32
    inputs, segments = speed_inputs(batch_size, num_items, item_len, text_config.vocab_size, device)
    tokens = inputs["input_ids"].numel()
    rows = []
    for name, layout, implementation, needs_segments, setup in _speed_setups():
        row = {"backend": name, "batch_size": batch_size, "seq_len": inputs["input_ids"].shape[1], "dtype": str(dtype)}
        try:
            torch.manual_seed(0)
            config = IAMConfig(text_config=text_config, num_items=NUM_ITEMS, iam_layout=layout)
            config._attn_implementation = implementation
            model = IAMForCausalRecommendation(config).to(device=device, dtype=dtype).train()
            if setup is not None:
                setup(model)
            kwargs = dict(inputs, item_segment_ids=segments) if needs_segments else inputs
            seconds = time_training_step(model, kwargs, warmup, steps)
            row.update(step_seconds=seconds, tokens_per_second=tokens / seconds)
            if cuda:
                row["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        except Exception as error:  # one backend failing must not lose the others' numbers
            row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
        finally:
            model = None
            if cuda:
                torch.cuda.empty_cache()
        print(json.dumps(row), flush=True)
        rows.append(row)
    plain = next((row for row in rows if row["backend"].startswith("plain") and "step_seconds" in row), None)
    for row in rows:
        if plain is not None and "step_seconds" in row:
            row["time_vs_plain"] = row["step_seconds"] / plain["step_seconds"]
    result = {
        "device": torch.cuda.get_device_name(0) if cuda else "CPU",
        "torch": torch.__version__,
        "layers": text_config.num_hidden_layers,
        "history_items": num_items,
        "item_tokens": item_len,
        "rows": rows,
    }
    for path in (os.path.join(args.state, SPEED_FILE), os.path.join(args.out, SPEED_FILE)):
        with open(path, "w") as handle:
            json.dump(result, handle, indent=1)
    with open(os.path.join(args.out, "speed.md"), "w") as handle:
        handle.write(render_speed(result))
    print(render_speed(result), flush=True)
    return rows


def render_speed(result: dict) -> str:
    lines = [
        f"Forward+backward of IAMForCausalRecommendation, {result['layers']} layers, {result['history_items']}-item "
        f"histories ({result['item_tokens']} tokens per item), on {result['device']} (torch {result['torch']}).",
        "",
        "| backend | batch x tokens | step (s) | tokens/s | peak GPU memory (GiB) | time vs plain |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        if "error" in row:
            lines.append(f"| {row['backend']} | {row['batch_size']} x {row['seq_len']} | failed: {row['error']} ||||")
            continue
        memory = f"{row['peak_memory_gib']:.2f}" if "peak_memory_gib" in row else "n/a (CPU)"
        ratio = f"{row['time_vs_plain']:.2f}x" if "time_vs_plain" in row else "n/a"
        lines.append(
            f"| {row['backend']} | {row['batch_size']} x {row['seq_len']} | {row['step_seconds']:.4f} | "
            f"{row['tokens_per_second']:,.0f} | {memory} | {ratio} |"
        )
    iam = [row for row in result["rows"] if not row["backend"].startswith("plain") and "time_vs_plain" in row]
    if iam:
        best = min(iam, key=lambda row: row["time_vs_plain"])
        lines += [
            "",
            f"Best IAM backend: {best['backend']}, {best['time_vs_plain']:.2f}x the plain step (goal <= 0.8x).",
        ]
    return "\n".join(lines) + "\n"


def estimated_step_seconds(state: str) -> float:
    """Seconds per training step of the gpu preset, from part 1's iam_sdpa speed (x1.5 for optimizer and data)."""
    try:
        with open(os.path.join(state, SPEED_FILE)) as handle:
            rows = json.load(handle)["rows"]
        row = next(row for row in rows if row["backend"] == "iam_sdpa" and "tokens_per_second" in row)
        return 1.5 * GPU_BATCH * GPU_TOKENS_PER_EXAMPLE / row["tokens_per_second"]
    except (OSError, StopIteration, KeyError):
        return 0.5  # no measurement: a cautious guess for an H100


def train_runs(args: argparse.Namespace) -> list[dict]:
    import logging

    import transformers_iam  # noqa: F401  (registers the Auto classes)
    from transformers_iam.experiments import RunArguments, run_experiment

    logging.basicConfig(format="%(message)s")
    logging.getLogger("transformers_iam").setLevel(logging.INFO)
    backbone, gguf_file = args.backbone, args.gguf_file or None
    overrides = dict(dataset_dir=os.path.join(args.state, "ml-100k"), backbone=backbone, gguf_file=gguf_file)
    if args.dry_run:  # the same code path, shrunk to seconds
        overrides.update(
            max_history=5,
            train_examples_per_user=1,
            max_eval_users=24,
            per_device_train_batch_size=4,
            per_device_eval_batch_size=16,
        )
        max_steps = 2
    else:
        seconds_left = args.deadline - time.time()
        step_seconds = estimated_step_seconds(args.state)
        max_steps = max(10, int((seconds_left / 2 - RUN_OVERHEAD_S) / step_seconds))
        print(f"{seconds_left:.0f} s left, ~{step_seconds:.3f} s per step: {max_steps} steps per run", flush=True)
    summaries = []
    for layout in ("stacked", "vanilla"):
        output_dir = os.path.join(args.state, "runs", layout)
        run = RunArguments.from_preset(
            "gpu", output_dir=output_dir, iam_layout=layout, max_steps=max_steps, **overrides
        )
        run.command = f"benchmarks/gpu/run_gpu.py (gpu preset, {layout}, max_steps={max_steps})"
        results = run_experiment(run)
        shutil.copy(os.path.join(output_dir, "metrics.json"), os.path.join(args.out, f"{layout}-metrics.json"))
        summaries.append({"layout": layout, "steps": max_steps, **results})
    with open(os.path.join(args.out, "summary.md"), "w") as handle:
        handle.write(render_summary(summaries))
    return summaries


def render_summary(summaries: list[dict]) -> str:
    keys = ("hr@10", "ndcg@10", "mrr@10", "ndcg@20")
    lines = [
        f"gpu preset, {summaries[0]['steps']} steps each, on {summaries[0]['machine']}. {summaries[0]['protocol']}",
        "",
        "| model | split | " + " | ".join(keys) + " | train s |",
        "| --- | --- | " + " | ".join("---" for _ in keys) + " | --- |",
    ]
    for summary in summaries:
        for split in ("valid", "test"):
            values = " | ".join(f"{summary[split].get(key, float('nan')):.4f}" for key in keys)
            lines.append(f"| {summary['layout']} | {split} | {values} | {summary['train_seconds']} |")
    popularity = summaries[0].get("popularity", {}).get("test")
    if popularity:
        lines.append(
            "| popularity | test | " + " | ".join(f"{popularity.get(key, float('nan')):.4f}" for key in keys) + " | |"
        )
    return "\n".join(lines) + "\n"


# -- driver ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["1", "2", "all"], help="1: install + speed table; 2: weights + training")
    parser.add_argument("--stage", help="the staged folder this command carries (gpu_stage/part1, .../part2)")
    parser.add_argument("--out", required=True, help="output folder (what comes back: at most 8 files)")
    parser.add_argument("--state", default=DEFAULT_STATE, help="kept between the two commands")
    parser.add_argument("--budget-s", type=float, default=520.0, help="this command's time (9 min less a margin)")
    parser.add_argument("--speed-batch-size", type=int, default=16)
    parser.add_argument("--dry-run", action="store_true", help="tiny stand-in model, two steps (GPU if any, else CPU)")
    parser.add_argument("--worker", choices=["speed", "train"], help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--backbone", help=argparse.SUPPRESS)
    parser.add_argument("--gguf-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.worker == "speed":
        speed_table(args)
        return
    if args.worker == "train":
        train_runs(args)
        return
    if args.part is None or args.stage is None:
        parser.error("--part and --stage are required")
    args.deadline = time.time() + args.budget_s
    os.makedirs(args.state, exist_ok=True)
    parts = {"1": [1], "2": [2], "all": [1, 2]}[args.part]
    for part in parts:
        stage = os.path.join(args.stage, f"part{part}") if args.part == "all" else args.stage
        log_path = os.path.join(args.out, f"part{part}.log")
        if part == 1:
            install_wheels(stage, args.state)
            keep_part(stage, args.state, 1)
            run_worker("speed", args, log_path)
        else:
            keep_part(stage, args.state, 2)
            backbone, gguf_file = join_weights(args.state)
            run_worker("train", args, log_path, ["--backbone", backbone, "--gguf-file", gguf_file or ""])


if __name__ == "__main__":
    main()
