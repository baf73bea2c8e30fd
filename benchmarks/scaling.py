"""The library end to end at a real catalog's size: a synthetic catalog (benchmarks/synthetic_catalog.py) of 10k, 100k
and 1M items through the bring-your-own-data path of examples/finetune.py, one process per size.

    python benchmarks/scaling.py                                         # 10k, 100k and 1M items (hours at 1M)
    python benchmarks/scaling.py --items 10000 100000 --out runs/scaling/scaling.json
    python benchmarks/scaling.py --items 1000000 --users 200000 --steps 50 --eval-users 500
    python benchmarks/scaling.py --items 300 --users 100 --steps 2 --eval-users 20 --latency-users 10   # smoke
    python benchmarks/scaling.py --items 10000 -- --preset cpu-full      # flags after -- go to finetune.py
    python benchmarks/scaling.py --ml-100k --items 1000000 --nprobe 32 128 -- --adapter_hidden_size 128 \
        --init_item_embeddings_from_text false        # what docs/results.md's million-item row ran

For each size: the catalog is generated (``items.csv``, ``interactions.csv``; ``--users`` users, ``--items // 5`` by
default, about 20 interactions each) or reused from ``--catalog-dir``; the memory the run needs is estimated (item
rows, their gradient and Adam's moments, the item-state cache, the data, evaluation's score matrices; printed part
by part) and a size that would not fit the memory available now is refused, saying so (``--force`` runs it anyway);
then a child process runs what ``examples/finetune.py`` runs, with these flags:

    --preset cpu-quick --interactions_file interactions.csv --catalog_file items.csv \\
    --text_template "{title} | {category}" --num_sampled_negatives 256 --sparse_item_gradients true \\
    --item_id_embedding_size 64 --max_steps STEPS --max_eval_users EVAL_USERS --evaluations 1 --output_dir RUN_DIR

(flags after ``--`` are added to them), through ``run_experiment`` itself, timed from outside: the library's
functions are wrapped, not changed. The child then serves the trained model: ``recommend`` (exact top-10, items
scored in chunks of 65,536) and an ``ItemIndex`` (``kind="ivf"``, ``--nprobe``) over its rows, one user a call, each
user's history excluded. Measured per size:

- peak RSS: the child's high-water mark (``ru_maxrss``), and after which phase it was reached;
- item rows from text and the item-state build (``init_item_embeddings_from_text``, ``enable_item_cache``), items/s;
  a run that uses the cache reads the rows in the cache's pass (``enable_item_cache(...,
  init_item_embeddings_from_text=True)``): its rows column is then empty and the build's items/s counts both;
- training targets/s: the targets of a step (the run's ``train_targets`` over its steps per epoch) over the median
  time between two steps' ends (collation included; the first step, and an interval with a validation pass or a
  checkpoint, left out), and the Trainer's own wall (``train_seconds``, validation and checkpoint included);
- evaluation users/s: the test pass (``Trainer.predict`` on ``--eval-users`` users, full-catalog ranks);
- ``recommend`` latency per user, p50 and p99 (the user's forward included, the collation not), exact and indexed
  (at each ``--nprobe``), and the index's recall@10 against the exact top-10;
- the item-state cache read back from the run's folder, as a process serving the checkpoint reads it (seconds, and
  whether it was loaded rather than rebuilt);
- what broke: the phase and the exception (or the signal: -9 is most likely the kernel's OOM killer), where a size
  does not run through. The row says so instead of numbers.

The estimate knows what grows with the catalog beyond the tables themselves: evaluation's ``[eval batch, items]``
logits (the every-item loss and popularity's ranks are computed in chunks: core/losses.py, recsys/baselines.py), and
the per-item tables' gradients and moments. With ``--sparse_item_gradients`` (on by default here; ``--dense`` turns it
off) a training step reads and updates only the rows of its targets and sampled negatives (``LazyAdamW``), so its
time does not grow with the catalog; the optimizer's moments still hold two floats per table entry.

``--ml-100k`` first runs ml-100k's default (full cross-entropy, dense gradients; the flags after ``--`` are not given
to it) for the same steps and users, measured the same way: the training rate a large catalog's is compared with.

Prints a markdown table (and one of each phase's seconds) and writes every number to ``--out`` (JSON). A run's
folder (checkpoints, the item-state cache: gigabytes at 1M items) is removed after its size unless ``--keep-runs``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
import traceback

import numpy as np
import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synthetic_catalog  # noqa: E402
from latency import latency_percentiles  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT_TEMPLATE = "{title} | {category}"
K = 10
GB = 1e9
# bytes the estimate counts (calibrated on runs of this script, see estimate_memory)
BASE_BYTES = 1.4e9  # python, torch, transformers and SmolLM2's first 4 layers (loading the GGUF file)
CATALOG_BYTES_PER_ITEM = 1_500  # id, text, the catalog's index, the collator's and the cache's token lists
READ_BYTES = 1_200  # reading an interaction: its record, its Interaction object, the user sequences
KEPT_BYTES = 200  # an interaction in the split's sequences and datasets, kept for the whole run


# -- the parent: catalogs, estimates, one child per size, the table -------------------------------------------------
def ensure_catalog(folder: str, items: int, users: int, seed: int, interactions_per_user: float) -> dict:
    """The catalog's summary (``catalog.json``), generating it unless the folder holds one with these parameters."""
    wanted = dict(items=items, users=users, seed=seed, interactions_per_user=float(interactions_per_user))
    summary_path = os.path.join(folder, "catalog.json")
    if os.path.isfile(summary_path):
        with open(summary_path, encoding="utf-8") as handle:
            summary = json.load(handle)
        same = all(summary.get(key) == value for key, value in wanted.items())
        if same and summary.get("format_version") == synthetic_catalog.FORMAT_VERSION:
            return summary
    started = time.perf_counter()
    summary = synthetic_catalog.generate(folder, items, users, seed=seed, interactions_per_user=interactions_per_user)
    print(f"generated {folder} in {time.perf_counter() - started:.1f} s: {summary['interactions']:,} interactions")
    return summary


def finetune_flags(args, catalog_dir: str, run_dir: str) -> list[str]:
    """The flags of ``examples/finetune.py`` the child runs with."""
    return [
        "--preset", args.preset,
        "--interactions_file", os.path.join(catalog_dir, "interactions.csv"),
        "--catalog_file", os.path.join(catalog_dir, "items.csv"),
        "--text_template", TEXT_TEMPLATE,
        "--num_sampled_negatives", str(args.negatives),
        *([] if args.dense else ["--sparse_item_gradients", "true"]),
        "--item_id_embedding_size", str(args.item_id_size),
        "--max_steps", str(args.steps),
        "--max_eval_users", str(args.eval_users),
        "--evaluations", "1",
        "--output_dir", run_dir,
        *args.finetune_flags,
    ]  # fmt: skip


def model_shape(flags: list[str]) -> dict:
    """What the estimate reads of the run these flags ask for (the backbone's config is read, not its weights)."""
    from transformers import AutoConfig

    from transformers_iam.experiments.build import backbone_location
    from transformers_iam.experiments.run_arguments import argument_parser, parse_command_line

    run = parse_command_line(flags, argument_parser())
    path, gguf_file = backbone_location(run.model)
    hidden = AutoConfig.from_pretrained(path, gguf_file=gguf_file).hidden_size
    return {
        "hidden": hidden,
        "adapter_hidden": run.model.adapter_hidden_size or hidden,
        "id_size": (run.model.item_id_embedding_size or hidden) if run.model.use_item_id_embeddings else 0,
        "num_item_tokens": run.model.num_item_tokens or run.data.max_item_tokens,  # token-level: every token's state
        "eval_batch": run.training.per_device_eval_batch_size,
        "train_item_rows": run.model.train_item_embeddings,
        "sparse_gradients": run.model.sparse_item_gradients,
    }


def estimate_memory(items: int, users: int, interactions: int, eval_users: int, shape: dict) -> dict:
    """Bytes a size needs at its peak: ``{"total": ..., "parts": {...}}``, the parts as they add up at the phase
    where the total is reached.

    Always held: python, torch and the backbone; the catalog (ids, texts, token lists); the split's sequences and
    datasets. Reading holds each interaction's record and objects for a while (before any model). Once the model is
    built: the item-state cache, and the per-item tables (the adapter's rows and bias, the item id vectors) held
    3 times while the rows are read from text (the encoded batches, their concatenation), 6 times in a training step
    with dense gradients (the weights, their dense gradient, Adam's two moments, the accumulated gradient and the
    foreach optimizer's temporaries; ``benchmarks/sampled_loss.py`` measures 3x the rows for the head alone), 3 times
    with sparse ones (weights and moments), and 3 times beside evaluation. Evaluation: the ``[eval batch, items]``
    logits and their ranking (3 copies), and the chunks of the every-item loss (core/losses.py
    ``EVALUATION_LOSS_SCORES``) and of popularity's ranks (recsys/baselines.py ``POPULARITY_RANKING_SCORES``), while
    the Trainer, its optimizer's moments included, is still alive."""
    from transformers_iam.core.losses import EVALUATION_LOSS_SCORES
    from transformers_iam.recsys.baselines import POPULARITY_RANKING_SCORES

    tables = items * ((shape["adapter_hidden"] + 1) + shape["id_size"]) * 4
    loss_scores = 3 * shape["eval_batch"] * items * 4 + 2 * EVALUATION_LOSS_SCORES * 4
    popularity = min(eval_users * items, POPULARITY_RANKING_SCORES) * 5
    step_copies = 6 if shape["train_item_rows"] and not shape["sparse_gradients"] else 3
    always = {
        "python, torch and the backbone": BASE_BYTES,
        "catalog (ids, texts, token lists)": items * CATALOG_BYTES_PER_ITEM,
    }
    phases = {
        "reading the interactions": {"reading the interactions (transient)": interactions * READ_BYTES},
        "item rows from text": {"item tables x 3": 3 * tables},
        "a training step": {f"item tables x {step_copies}": step_copies * tables},
        "evaluation": {
            "item tables x 3": 3 * tables,
            "evaluation: logits [eval batch, items] and loss chunks"
            if loss_scores >= popularity
            else "evaluation: popularity's chunks": max(loss_scores, popularity),
        },
    }
    model = {
        "the split (sequences, datasets)": interactions * KEPT_BYTES,
        "item-state cache": items * (shape["num_item_tokens"] * shape["hidden"] * 4 + 256),
    }
    for name in ("item rows from text", "a training step", "evaluation"):
        phases[name] = {**model, **phases[name]}
    phase, parts = max(phases.items(), key=lambda entry: sum(entry[1].values()))
    parts = {**always, **parts}
    return {"total": sum(parts.values()), "phase": phase, "parts": parts}


def estimate_disk(items: int, shape: dict) -> float:
    """Bytes a run writes: the Trainer's checkpoint (weights, Adam's moments), the selected checkpoint and the
    item-state cache."""
    rows = items * (shape["adapter_hidden"] + 1 + shape["id_size"]) * 4
    return 4 * rows + items * shape["num_item_tokens"] * shape["hidden"] * 4 + 1e9


def run_child(spec: dict, log_path: str, timeout: float | None) -> tuple[dict, int, str]:
    """Run one size in a child process; its result (as far as it got), exit status and log's tail."""
    spec_path = os.path.join(os.path.dirname(log_path), "spec.json")
    with open(spec_path, "w", encoding="utf-8") as handle:
        json.dump(spec, handle)
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "src"), os.environ.get("PYTHONPATH", "")]),
    }
    with open(log_path, "w", encoding="utf-8") as log:
        child = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--_child", spec_path],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=ROOT,
        )
        try:
            status = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            status = child.wait()
            status = f"timeout after {timeout:.0f} s"
    result = {}
    if os.path.isfile(spec["result"]):
        with open(spec["result"], encoding="utf-8") as handle:
            result = json.load(handle)
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        tail = handle.read()[-3000:]
    return result, status, tail


def broke_line(result: dict, status, tail: str) -> str | None:
    """What stopped a size, in a few words, or None when it ran through."""
    if "broke" in result:
        broke = result["broke"]
        return f"broke in {broke['phase']}: {broke['error']}"
    if status == 0 and result.get("done"):
        return None
    phase = result.get("current_phase", "starting")
    if isinstance(status, str):
        return f"{status} in {phase}"
    if status < 0:
        hint = " (the kernel's OOM killer?)" if status == -9 else ""
        return f"killed by signal {-status}{hint} in {phase}"
    last = [line for line in tail.strip().splitlines() if line.strip()][-1:] or ["no output"]
    return f"exit status {status} in {phase}: {last[0][:200]}"


def fmt(value, spec: str = ",.1f", missing: str = "-") -> str:
    return missing if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def label(row: dict) -> str:
    """A row's first cell: its items, and the data set's name when it is not a synthetic catalog."""
    return f"{row['dataset']}: {row['items']:,}" if row.get("dataset") else f"{row['items']:,}"


def table(rows: list[dict]) -> str:
    lines = [
        "| items | users | interactions | peak RSS GB (estimate) | item rows from text items/s "
        "| item-state build items/s | train targets/s | eval users/s | exact p50 / p99 ms "
        "| ivf p50 / p99 ms | ivf recall@10 | status |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        exact, ivf = row.get("exact") or {}, row.get("ivf") or {}
        lines.append(
            f"| {label(row)} | {row['users']:,} | {fmt(row.get('interactions'), ',')} "
            f"| {fmt(row.get('peak_rss_gb'), '.2f')} ({fmt(row['estimate_gb'], '.1f')}) "
            f"| {fmt(row.get('text_init_items_per_s'), ',.0f')} | {fmt(row.get('cache_items_per_s'), ',.0f')} "
            f"| {fmt(row.get('train_targets_per_s'), ',.1f')} | {fmt(row.get('eval_users_per_s'), ',.1f')} "
            f"| {fmt(exact.get('p50_ms'), '.1f')} / {fmt(exact.get('p99_ms'), '.1f')} "
            f"| {fmt(ivf.get('p50_ms'), '.1f')} / {fmt(ivf.get('p99_ms'), '.1f')} "
            f"| {fmt(ivf.get('recall@10'), '.4f')} | {row['status']} |"
        )
    return "\n".join(lines)


PHASE_COLUMNS = (
    "build run",
    "read and split",
    "item rows from text",
    "item-state cache",
    "training",
    "test evaluation",
    "popularity baseline",
    "results",
    "write run",
    "index build",
    "item-state load",
)


def phase_table(rows: list[dict]) -> str:
    lines = [
        "| items | " + " | ".join(f"{name} s" for name in PHASE_COLUMNS) + " | peak RSS reached in |",
        "|---:|" + "---:|" * len(PHASE_COLUMNS) + "---|",
    ]
    for row in rows:
        seconds = row.get("phase_seconds") or {}
        cells = " | ".join(fmt(seconds.get(name)) for name in PHASE_COLUMNS)
        lines.append(f"| {label(row)} | {cells} | {row.get('peak_phase') or '-'} |")
    return "\n".join(lines)


def measure(args, flags: list[str], run_dir: str, row_of, timeout: float | None = None) -> dict:
    """One child process running ``flags`` on a fresh ``run_dir``: its row (``row_of(result, status)``, the wall
    added), printed; the run's folder removed unless ``--keep-runs``."""
    if os.path.exists(run_dir):  # a fresh run: a cache left here would be loaded, not built
        shutil.rmtree(run_dir)
    os.makedirs(run_dir)
    spec = {
        "flags": flags,
        "result": os.path.join(run_dir, "scaling_result.json"),
        "latency_users": args.latency_users,
        "nprobes": args.nprobe,
    }
    started = time.perf_counter()
    result, status, tail = run_child(spec, os.path.join(run_dir, "child.log"), timeout)
    broke = broke_line(result, status, tail)
    row = row_of(result, broke or "ran through")
    row["wall_seconds"] = time.perf_counter() - started
    if broke:
        print(f"{broke}\nlog tail:\n{tail[-1500:]}")
    print(table([row]), flush=True)
    if not args.keep_runs:
        shutil.rmtree(run_dir, ignore_errors=True)
    return row


def run_reference(args) -> dict:
    """ml-100k's default run (``examples/finetune.py`` with no data flags) cut to ``--steps`` steps and
    ``--eval-users`` users, measured as a size is: the training rate the issue compares a large catalog's with."""
    run_dir = os.path.abspath(os.path.join(args.work_dir, "run-ml-100k"))
    flags = [
        "--preset", args.preset,
        "--max_steps", str(args.steps),
        "--max_eval_users", str(args.eval_users),
        "--evaluations", "1",
        "--output_dir", run_dir,
    ]  # fmt: skip
    print("\nml-100k, the default run: " + shlex.join(["python", "examples/finetune.py", *flags]))

    def row_of(result: dict, status: str) -> dict:
        data = result.get("data") or {}
        row = make_row(data.get("items") or 0, data.get("users") or 0, data, None, result, status)
        return {**row, "dataset": "ml-100k"}

    return measure(args, flags, run_dir, row_of)


def make_row(items: int, users: int, summary: dict, estimate: dict | None, result: dict, status: str) -> dict:
    """One size's row of the table (and of the JSON) from its child's result."""
    training = result.get("training") or {}
    test = result.get("test_evaluation") or {}
    return {
        "items": items,
        "users": users,
        "interactions": summary.get("interactions"),
        "estimate_gb": estimate["total"] / GB if estimate else None,
        "estimate": estimate,
        "peak_rss_gb": result.get("peak_rss_kib", 0) * 1024 / GB if result.get("peak_rss_kib") else None,
        "peak_phase": result.get("peak_phase"),
        "text_init_items_per_s": (result.get("item_rows_from_text") or {}).get("items_per_s"),
        "cache_items_per_s": (result.get("item_state_cache") or {}).get("items_per_s"),
        "cache_load": result.get("item_state_load"),
        "train_targets_per_s": training.get("targets_per_s"),
        "eval_users_per_s": test.get("users_per_s"),
        "exact": result.get("exact"),
        "ivf": result.get("ivf"),
        "status": status,
        "phase_seconds": result.get("phase_seconds"),
        "details": result,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = []
    if "--" in argv:
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--users",
        type=int,
        nargs="+",
        default=None,
        help="users per size (one value for all sizes; default: items // 5, at least 100)",
    )
    parser.add_argument("--interactions-per-user", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20, help="training steps (at least 2: a step's time is measured)")
    parser.add_argument("--eval-users", type=int, default=500, help="--max_eval_users: validation and test users")
    parser.add_argument("--latency-users", type=int, default=100, help="users served one at a time")
    parser.add_argument("--negatives", type=int, default=256, help="--num_sampled_negatives")
    parser.add_argument("--item-id-size", type=int, default=64, help="--item_id_embedding_size")
    parser.add_argument("--dense", action="store_true", help="dense item gradients (no --sparse_item_gradients)")
    parser.add_argument(
        "--nprobe",
        type=int,
        nargs="+",
        default=[32],
        help="the ivf index's groups scanned per query; several: each is measured (the first is the table's)",
    )
    parser.add_argument("--preset", default="cpu-quick")
    parser.add_argument("--catalog-dir", default=os.path.join("runs", "scaling", "catalogs"))
    parser.add_argument("--work-dir", default=os.path.join("runs", "scaling"))
    parser.add_argument("--out", default=None, help="a JSON file of every number")
    parser.add_argument("--force", action="store_true", help="run a size the estimate says will not fit")
    parser.add_argument("--estimate-only", action="store_true", help="generate the catalogs and estimate, no run")
    parser.add_argument("--keep-runs", action="store_true", help="keep each run's folder (checkpoints, cache)")
    parser.add_argument("--timeout-minutes", type=float, default=None, help="stop a size's child after this long")
    parser.add_argument(
        "--ml-100k",
        action="store_true",
        help="first, ml-100k's default run (full cross-entropy, dense gradients) for the same steps and users, as "
        "the reference of the training rate (flags after -- are not given to it)",
    )
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        child_main(args._child)
        return []
    args.finetune_flags = extra
    if args.steps < 2:
        parser.error("--steps must be at least 2 (a step's time is the time between two steps' ends)")
    users = args.users or [max(100, items // 5) for items in args.items]
    if len(users) == 1:
        users = users * len(args.items)
    if len(users) != len(args.items):
        parser.error(f"--users: one value, or one per size ({len(args.items)}), got {len(users)}")

    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, {psutil.virtual_memory().total / GB:.1f} GB memory, load "
        f"average {os.getloadavg()}; {args.steps} steps, {args.eval_users} evaluation users, {args.latency_users} "
        f"users served one at a time"
    )
    rows, shape = [], None
    if args.ml_100k:
        rows.append(run_reference(args))
    for items, num_users in zip(args.items, users):
        name = f"items{items}-users{num_users}-ipu{args.interactions_per_user:g}-seed{args.seed}"
        catalog_dir = os.path.abspath(os.path.join(args.catalog_dir, name))
        summary = ensure_catalog(catalog_dir, items, num_users, args.seed, args.interactions_per_user)
        run_dir = os.path.abspath(os.path.join(args.work_dir, f"run-{items}"))
        flags = finetune_flags(args, catalog_dir, run_dir)
        shape = shape or model_shape(flags)
        estimate = estimate_memory(items, num_users, summary["interactions"], min(args.eval_users, num_users), shape)
        available = psutil.virtual_memory().available
        parts = ", ".join(f"{part} {value / GB:.2f}" for part, value in estimate["parts"].items())
        print(
            f"\n{items:,} items, {num_users:,} users, {summary['interactions']:,} interactions: estimated peak "
            f"{estimate['total'] / GB:.1f} GB in {estimate['phase']} ({parts}); available {available / GB:.1f} GB"
        )
        os.makedirs(args.work_dir, exist_ok=True)
        disk_needed, disk_free = estimate_disk(items, shape), shutil.disk_usage(args.work_dir).free
        refusal = None
        if estimate["total"] > available:
            largest = max(estimate["parts"], key=estimate["parts"].get)
            hint = "; -- --per_device_eval_batch_size 8 shrinks it" if largest.startswith("evaluation: loss") else ""
            refusal = (
                f"refused: needs about {estimate['total'] / GB:.1f} GB of memory in {estimate['phase']} "
                f"({largest}: {estimate['parts'][largest] / GB:.1f} GB{hint}), {available / GB:.1f} GB available "
                "(--force runs it)"
            )
        elif disk_needed > disk_free:
            refusal = f"refused: writes about {disk_needed / GB:.1f} GB, {disk_free / GB:.1f} GB free on disk"
        if args.estimate_only or (refusal and not args.force):
            print(refusal or "estimate only: not run")
            rows.append(make_row(items, num_users, summary, estimate, {}, refusal or "estimate only"))
            continue
        print(shlex.join(["python", "examples/finetune.py", *flags]))
        timeout = args.timeout_minutes * 60 if args.timeout_minutes else None
        row_of = functools.partial(make_row, items, num_users, summary, estimate)
        rows.append(measure(args, flags, run_dir, row_of, timeout))
    print("\n" + table(rows) + "\n\nseconds per phase\n\n" + phase_table(rows))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as handle:
            arguments = {key: value for key, value in vars(args).items() if key != "_child"}
            machine = {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "memory_gb": psutil.virtual_memory().total / GB,
            }
            json.dump({"arguments": arguments, "machine": machine, "rows": rows}, handle, indent=1)
    return rows


# -- the child: one size, the library's own run, timed from outside ---------------------------------------------------
class Recorder:
    """The child's measurements, written to its result file after every phase (a killed child leaves what it had)."""

    def __init__(self, path: str):
        self.path, self.result, self.stack = path, {"phases": [], "phase_seconds": {}}, []
        self.peak_kib = 0

    def save(self) -> None:
        self.result["current_phase"] = self.stack[-1] if self.stack else None
        with open(f"{self.path}.partial", "w", encoding="utf-8") as handle:
            json.dump(self.result, handle, indent=1)
        os.replace(f"{self.path}.partial", self.path)

    def enter(self, name: str) -> None:
        self.stack.append(name)
        self.save()

    def leave(self, name: str, seconds: float) -> None:
        self.stack.remove(name)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        if peak > self.peak_kib:
            self.peak_kib, self.result["peak_phase"] = peak, name
        self.result["peak_rss_kib"] = peak
        self.result["phases"].append(
            {
                "phase": name,
                "seconds": round(seconds, 3),
                "peak_rss_kib_after": peak,
                "rss_kib_after": psutil.Process().memory_info().rss // 1024,
            }
        )
        self.result["phase_seconds"][name] = round(self.result["phase_seconds"].get(name, 0.0) + seconds, 3)
        self.save()

    def timed(self, name: str, function, on_result=None):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            self.enter(name)
            started = time.perf_counter()
            value = function(*args, **kwargs)
            seconds = time.perf_counter() - started
            if on_result is not None:
                on_result(seconds, args, kwargs, value)
            self.leave(name, seconds)
            return value

        return wrapper


def step_callback(recorder: Recorder):
    from transformers import TrainerCallback

    class StepTimes(TrainerCallback):
        """The time between consecutive steps' ends; an interval with a validation pass or a save is marked."""

        def __init__(self):
            self.ends, self.busy, self.validation, self.steps_peak_kib = [], [], [], None

        def on_train_begin(self, args, state, control, **kwargs):
            recorder.enter("training")
            self.started = time.perf_counter()

        def on_step_begin(self, args, state, control, **kwargs):
            recorder.stack[-1:] = ["training"]

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())
            self.busy.append(False)
            if not any(self.busy[:-1]):  # the high-water mark of the steps, before any validation pass or save
                self.steps_peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            # what follows a step's end until the next: logging, and at the last step validation and the checkpoint
            recorder.stack[-1:] = ["training: validation pass, checkpoint or loading the best one"]

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if self.busy:
                self.busy[-1] = True
            if metrics and "eval_runtime" in metrics:
                self.validation.append(
                    {"users_per_s": metrics.get("eval_samples_per_second"), "seconds": metrics["eval_runtime"]}
                )

        def on_save(self, args, state, control, **kwargs):
            if self.busy:
                self.busy[-1] = True

        def on_train_end(self, args, state, control, **kwargs):
            recorder.stack[-1:] = ["training"]
            recorder.leave("training", time.perf_counter() - self.started)

        def clean_intervals(self) -> list[float]:
            """Seconds between step ends whose interval held no validation pass or save (the first step left out)."""
            return [b - a for a, b, busy in zip(self.ends, self.ends[1:], self.busy) if not busy]

    return StepTimes()


def serve(recorder: Recorder, built, latency_users: int, nprobes: list[int]) -> None:
    """Top-10 for single users from the trained model: exact ``recommend`` in chunks, and an ivf ``ItemIndex``
    scanning each of ``nprobes`` groups in turn (the first is the table's)."""
    import torch

    from transformers_iam.core.ranking import DEFAULT_CHUNK_SIZE
    from transformers_iam.integrations.item_index import ItemIndex, import_faiss

    model, collator = built.model, built.collator
    model.eval()
    test = built.data.test
    examples = [{"history": test[index]["history"]} for index in range(min(latency_users, len(test)))]
    batches = [collator([example]) for example in examples]
    inputs = [{key: value for key, value in batch.items() if key != "history_item_indices"} for batch in batches]
    exclusions = [batch["history_item_indices"] for batch in batches]
    gc.collect()
    with torch.no_grad():
        recorder.enter("exact recommend")
        started = time.perf_counter()
        model.recommend(**inputs[0], k=K, exclude_item_ids=exclusions[0], chunk_size=DEFAULT_CHUNK_SIZE)  # warm-up
        times, exact = [], []
        for batch, excluded in zip(inputs, exclusions):
            start = time.perf_counter()
            top = model.recommend(**batch, k=K, exclude_item_ids=excluded, chunk_size=DEFAULT_CHUNK_SIZE)
            times.append(time.perf_counter() - start)
            exact.append(set(top.indices[0].tolist()))
        recorder.result["exact"] = {**latency_percentiles(times), "chunk_size": DEFAULT_CHUNK_SIZE}
        recorder.result["threads"] = {"torch": torch.get_num_threads(), "faiss": import_faiss().omp_get_max_threads()}
        forward = []
        for batch in inputs:
            start = time.perf_counter()
            model.user_states(**{key: value for key, value in batch.items() if key != "labels"})
            forward.append(time.perf_counter() - start)
        recorder.result["user_state"] = latency_percentiles(forward)
        recorder.leave("exact recommend", time.perf_counter() - started)

        recorder.enter("index build")
        started = time.perf_counter()
        index = ItemIndex.from_model(model, kind="ivf", nprobe=nprobes[0])
        build_seconds = time.perf_counter() - started
        recorder.leave("index build", build_seconds)
        recorder.enter("indexed search")
        started = time.perf_counter()
        sweep = []
        for nprobe in nprobes:
            index.nprobe = nprobe
            times, found = [], []
            for step, (batch, excluded) in enumerate([(inputs[0], exclusions[0]), *zip(inputs, exclusions)]):
                start = time.perf_counter()
                states = model.user_states(**{key: value for key, value in batch.items() if key != "labels"})
                _, indices = index.search(states, K, exclude=excluded)
                if step:  # the first is a warm-up
                    times.append(time.perf_counter() - start)
                    found.append(set(indices[0].tolist()) - {-1})
            hits = sum(len(a & b) for a, b in zip(found, exact))
            sweep.append(
                {
                    **latency_percentiles(times),
                    "recall@10": hits / (K * len(exact)),
                    "nprobe": index.nprobe,
                    "nlist": int(index.index.nlist),
                    "build_seconds": build_seconds,
                }
            )
        recorder.result["ivf"] = sweep[0]
        recorder.result["ivf_sweep"] = sweep
        recorder.leave("indexed search", time.perf_counter() - started)


def load_item_cache(recorder: Recorder, run, built) -> None:
    """The item-state cache the run saved beside its checkpoint, read back (its records compared, its tensors loaded,
    bound to the cached layers' digest and checked exact) as a process serving the checkpoint would: timed, and
    whether it was loaded or rebuilt (a rebuild writes the files again)."""
    from transformers_iam.core.catalog import item_token_sequences
    from transformers_iam.core.item_cache_lifecycle import load_or_build_item_cache
    from transformers_iam.experiments.build import item_cache_dir

    model = built.model
    if getattr(model, "item_cache", None) is None:
        return
    folder = item_cache_dir(run, run.training.output_dir)
    sequences = item_token_sequences(built.collator, model.catalog)

    def written() -> dict:
        return {name: os.stat(os.path.join(folder, name)).st_mtime_ns for name in sorted(os.listdir(folder))}

    before = written()
    model.item_cache = None
    gc.collect()
    recorder.enter("item-state load")
    started = time.perf_counter()
    model.item_cache = load_or_build_item_cache(model, sequences, folder)
    seconds = time.perf_counter() - started
    recorder.result["item_state_load"] = {
        "items": model.item_cache.num_items,
        "seconds": round(seconds, 3),
        "loaded": written() == before,
        "bytes": sum(os.path.getsize(os.path.join(folder, name)) for name in before),
    }
    recorder.leave("item-state load", seconds)


def child_main(spec_path: str) -> None:
    """One size: ``run_experiment`` on the run the flags ask for, its phases timed, then serving."""
    import logging

    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    recorder = Recorder(spec["result"])
    logging.basicConfig(format="%(message)s")
    logging.getLogger("transformers_iam").setLevel(logging.INFO)
    try:
        recorder.enter("starting")
        import transformers_iam  # noqa: F401  (registers the Auto classes)
        from transformers_iam import IAMForCausalRecommendation
        from transformers_iam.experiments import run as run_module
        from transformers_iam.experiments.run_arguments import argument_parser, parse_command_line

        run = parse_command_line(spec["flags"], argument_parser())
        captured = {}

        def items_per_second(key):
            def note(seconds, args, kwargs, value):
                model = args[0]
                recorder.result[key] = {
                    "items": model.config.num_items,
                    "seconds": round(seconds, 3),
                    "items_per_s": model.config.num_items / max(seconds, 1e-9),
                }

            return note

        def note_data(seconds, args, kwargs, data):
            recorder.result["data"] = {
                "seconds": round(seconds, 3),
                **{
                    key: data.statistics.get(key)
                    for key in (
                        "users",
                        "items",
                        "items_with_interactions",
                        "interactions",
                        "train_examples",
                        "duplicate_interactions",
                    )
                },
            }

        def note_test(seconds, args, kwargs, value):
            dataset = args[1]
            recorder.result["test_evaluation"] = {
                "users": len(dataset),
                "seconds": round(seconds, 3),
                "users_per_s": len(dataset) / max(seconds, 1e-9),
                "trainer_samples_per_s": value[0].get("samples_per_second"),
            }

        model_class = IAMForCausalRecommendation
        model_class.init_item_embeddings_from_text = recorder.timed(
            "item rows from text", model_class.init_item_embeddings_from_text, items_per_second("item_rows_from_text")
        )
        model_class.enable_item_cache = recorder.timed(
            "item-state cache", model_class.enable_item_cache, items_per_second("item_state_cache")
        )
        run_module.load_data = recorder.timed("read and split", run_module.load_data, note_data)
        run_module.build_run = recorder.timed(
            "build run", run_module.build_run, lambda s, a, k, value: captured.update(built=value)
        )
        run_module.evaluate_split = recorder.timed("test evaluation", run_module.evaluate_split, note_test)
        run_module.evaluate_popularity = recorder.timed("popularity baseline", run_module.evaluate_popularity)
        run_module.assemble_results = recorder.timed("results", run_module.assemble_results)
        run_module.write_run = recorder.timed("write run", run_module.write_run)
        steps = step_callback(recorder)
        recorder.leave("starting", 0.0)

        results = run_module.run_experiment(run, callbacks=[steps])

        built = captured["built"]
        steps_per_epoch = max(1, math.ceil(len(built.data.train) / run.training.per_device_train_batch_size))
        targets_per_step = results["train_targets"] / steps_per_epoch
        intervals = steps.clean_intervals()
        median = float(np.median(intervals)) if intervals else None
        recorder.result["training"] = {
            "steps": results["total_steps"],
            "train_targets_per_epoch": results["train_targets"],
            "targets_per_step": targets_per_step,
            "median_step_seconds": median,
            "targets_per_s": targets_per_step / median if median else None,
            "timed_intervals": len(intervals),
            "peak_rss_gb_in_steps": steps.steps_peak_kib * 1024 / GB if steps.steps_peak_kib else None,
            "trainer_train_seconds": results["train_seconds"],
            "trainer_targets_per_s": targets_per_step * results["total_steps"] / max(results["train_seconds"], 1e-9),
        }
        recorder.result["validation"] = steps.validation
        recorder.result["metrics"] = {
            split: {key: results[split].get(key) for key in ("ndcg@10", "hr@10", "users")}
            for split in ("valid", "test")
        }
        recorder.result["trainer_peak_rss_mib"] = results.get("peak_rss_mib")
        del results
        serve(recorder, built, spec["latency_users"], spec["nprobes"])
        load_item_cache(recorder, run, built)
        recorder.result["done"] = True
        recorder.save()
    except BaseException as error:  # noqa: B036  (a KeyboardInterrupt is recorded too, then raised)
        phase = recorder.stack[-1] if recorder.stack else "starting"
        recorder.result["broke"] = {
            "phase": phase,
            "error": f"{type(error).__name__}: {str(error)[:500]}",
            "traceback": traceback.format_exc()[-4000:],
        }
        recorder.result["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        recorder.save()
        raise


if __name__ == "__main__":
    main()
