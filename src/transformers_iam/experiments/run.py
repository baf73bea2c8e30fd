"""The main job as a library: train on the training prefixes, select on validation, report test once.

Example:
    >>> config = ExperimentConfig.from_preset("cpu-quick", output_dir="runs/quick")  # doctest: +SKIP
    >>> results = run_experiment(config)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import time

import torch
from datasets import Dataset
from transformers import Trainer, TrainerCallback
from transformers.utils import logging

from ..recsys.baselines import evaluate_popularity
from ..recsys.breakdown import cold_breakdown, long_tail_breakdown
from ..recsys.evaluation import ValidationRanks, ranking_evaluation
from ..recsys.metrics import protocol_line
from ..recsys.paired import paired_comparison
from ..recsys.split import LeaveOneOutData
from .build import (
    backbone_name,
    build_collator,
    build_model,
    count_parameters,
    count_training_targets,
    eval_subset,
    load_data,
    load_tokenizer,
    make_optimizer,
    training_arguments,
)
from .checkpoints import _check_resumable, _replace_directory, _write_atomically
from .config import EXPERIMENT_FILE, ExperimentConfig
from .report import find_sasrec_reference, plot_validation, render_report

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
        >>> result = breakdowns(data, results["ranks"], {"valid": valid, "test": test})  # doctest: +SKIP
        >>> result["long_tail"]["test"]["groups"]["head"]["metrics"]["model"]["ndcg@10"]  # doctest: +SKIP
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


# What may differ between an interrupted run and its resumption: everything else must be the same run.
def run_experiment(config: ExperimentConfig, callbacks: list[TrainerCallback] | None = None) -> dict:
    """Train on the training prefixes, select on validation, report test once. Returns what metrics.json holds.

    With ``config.resume`` the run continues from the last complete checkpoint in ``<output_dir>/trainer`` (model,
    optimizer, scheduler, RNG and data order), and ends as the uninterrupted run would have (docs/reliability.md).
    """
    if config.cold_items is not None:
        # the data side is ready (data.cold_items, warm_catalog, warm_valid, cold_breakdown); training on the warm
        # catalog and scoring the cold items afterwards (model.add_items) is not wired here yet: refuse rather than
        # train with the cold items in the softmax, which is another protocol
        raise NotImplementedError(
            "cold_items: the main job cannot run the cold-item protocol yet (the model side, training on the warm "
            "catalog then adding the cold items, is not wired); benchmarks/sasrec/export.py --cold-items can"
        )
    started = time.time()
    os.makedirs(config.output_dir, exist_ok=True)
    resume_from = _check_resumable(config, os.path.join(config.output_dir, "trainer"))  # before loading anything
    if resume_from is None:
        _write_atomically(os.path.join(config.output_dir, EXPERIMENT_FILE), json.dumps(config.to_dict(), indent=1))
    else:
        logger.info(f"resuming from {resume_from}")
    torch.manual_seed(config.seed)
    data = load_data(config)
    logger.info(data.describe())
    tokenizer = load_tokenizer(config)
    collator = build_collator(config, tokenizer, data.catalog)
    model = build_model(config, data, collator)
    if config.lora:
        from ..integrations.peft import apply_lora

        model = apply_lora(model, rank=config.lora_rank)
    trainable, total = count_parameters(model)
    layer_types = model.config.resolved_layer_types
    logger.info(f"backbone: {backbone_name(config)}, {model.config.num_backbone_layers} layers: {layer_types}")
    logger.info(f"parameters: {trainable:,} trained of {total:,}")
    valid, test = eval_subset(data.valid, config), eval_subset(data.test, config)
    if config.max_eval_users is not None:
        config.notes.append(f"smoke run: only the first {config.max_eval_users} users are evaluated")

    args = training_arguments(config, len(data.train))
    validation_ranks = ValidationRanks()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=valid,
        data_collator=collator,
        optimizers=(make_optimizer(model, config), None),
        callbacks=[*(callbacks or []), validation_ranks],
        **ranking_evaluation(config.exclude_history, ranks=validation_ranks),
    )
    train_started = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.time() - train_started
    best_step = trainer.state.best_global_step
    # The selected checkpoint was already evaluated on validation during training: reuse that pass.
    valid_metrics = next(
        {key[len("eval_") :]: value for key, value in entry.items() if key.startswith("eval_")}
        for entry in trainer.state.log_history
        if entry.get("step") == best_step and "eval_ndcg@10" in entry
    )
    if best_step in validation_ranks.by_step:
        valid_ranks = user_ranks(valid, validation_ranks.by_step[best_step])
    else:  # resumed after that pass: the Trainer loaded the selected checkpoint, rank validation again with it
        valid_ranks = evaluate_split(trainer, valid, "eval")[1]
    test_metrics, test_ranks = evaluate_split(trainer, test, "test")  # once, on the checkpoint validation chose

    # popularity on exactly the users the model was evaluated on, so that the comparison is paired
    popularity, popularity_ranks = {}, {}
    for split, dataset in (("valid", valid), ("test", test)):
        popularity[split], popularity_ranks[split] = evaluate_popularity(
            data, split, config.exclude_history, dataset=dataset, return_ranks=True
        )
    ranks = {
        "valid": {"model": valid_ranks, "popularity": popularity_ranks["valid"]},
        "test": {"model": test_ranks, "popularity": popularity_ranks["test"]},
    }
    paired = {
        split: {
            metric: paired_comparison(
                ranks[split]["model"], ranks[split]["popularity"], metric, seed=config.seed
            ).to_dict()
            for metric in ("ndcg@10", "hr@10")
        }
        for split in ("valid", "test")
    }
    sasrec = find_sasrec_reference(config, data.statistics, {split: list(ranks[split]["model"]) for split in ranks})
    results = {
        "protocol": protocol_line(config.exclude_history, "test"),
        "exclude_history": config.exclude_history,
        "dataset": data.statistics,
        "model": {
            "backbone": backbone_name(config),
            "layer_types": layer_types,
            "trained_parameters": trainable,
            "total_parameters": total,
            "lora": config.lora,
            "item_cache": getattr(model, "item_cache", None) is not None,
            "intra_implementation": config.intra_implementation,
        },
        "supervision": config.supervision,
        "train_targets": count_training_targets(data.train, collator),
        "best_step": best_step,
        "valid": valid_metrics,
        "test": test_metrics,
        "popularity": popularity,
        "paired_vs_popularity": paired,
        "sasrec": sasrec,
        # per split: the long tail and, under the cold-item protocol, cold against warm targets (recsys/breakdown.py)
        "breakdown": breakdowns(data, ranks, {"valid": valid, "test": test}, sasrec, seed=config.seed),
        "validation_curve": [
            {"step": entry["step"], "ndcg@10": entry["eval_ndcg@10"]}
            for entry in trainer.state.log_history
            if "eval_ndcg@10" in entry
        ],
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.time() - started, 1),
        **peak_memory(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"),
        "config": config.to_dict(),
        "ranks": ranks,  # {split: {"model" | "popularity": {user_id: rank}}}, for paired comparisons
    }
    if not trainer.is_world_process_zero():  # under accelerate/DDP, one process writes
        return results
    # Each folder is written whole in a staging sibling, then moved into place (docs/reliability.md).
    checkpoint_dir = os.path.join(config.output_dir, "checkpoint")
    final_model = trainer.model
    if config.lora:
        lora_dir = os.path.join(config.output_dir, "lora-adapter")
        final_model.save_pretrained(f"{lora_dir}.staging")  # adapter-only checkpoint
        _replace_directory(f"{lora_dir}.staging", lora_dir)
        final_model = final_model.merge_and_unload()
    staging = f"{checkpoint_dir}.staging"
    if os.path.exists(staging):  # left by a crash: never part of a checkpoint
        shutil.rmtree(staging)
    final_model.save_pretrained(staging)
    collator.save_pretrained(staging)  # prompt settings + tokenizer, for evaluation and pipelines
    _write_atomically(os.path.join(staging, EXPERIMENT_FILE), json.dumps(config.to_dict(), indent=1))
    _replace_directory(staging, checkpoint_dir)

    _write_atomically(os.path.join(config.output_dir, "metrics.json"), json.dumps(results, indent=1))
    reference = {"popularity": popularity["valid"]["ndcg@10"]}
    if results["sasrec"] is not None:
        reference["SASRec"] = results["sasrec"]["valid"]["ndcg@10"]
    plot_validation(
        trainer.state.log_history, os.path.join(config.output_dir, "validation_ndcg10.png"), reference=reference
    )
    report = render_report(results)
    _write_atomically(os.path.join(config.output_dir, "report.md"), report)
    logger.info(report)
    return results
