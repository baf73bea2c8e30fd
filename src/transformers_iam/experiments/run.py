"""The main job as a library: train on the training prefixes, select on validation, report test once.

Example:
    >>> config = ExperimentConfig.from_preset("cpu-quick", output_dir="runs/quick")  # doctest: +SKIP
    >>> results = run_experiment(config)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import platform
import time

import torch
from transformers import Trainer
from transformers.utils import logging

from ..core.collator import IAMDataCollator
from ..recsys.baselines import evaluate_popularity
from ..recsys.evaluation import ranking_evaluation
from ..recsys.metrics import format_metrics_table, protocol_line
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
from .config import EXPERIMENT_FILE, ExperimentConfig
from .report import plot_validation, render_report

logger = logging.get_logger(__name__)


def evaluate_split(trainer: Trainer, dataset, split: str) -> dict[str, float]:
    metrics = trainer.evaluate(dataset, metric_key_prefix=split)
    return {key[len(split) + 1 :]: value for key, value in metrics.items() if key.startswith(split + "_")}


def run_experiment(config: ExperimentConfig) -> dict:
    """Train on the training prefixes, select on validation, report test once. Returns what metrics.json holds."""
    started = time.time()
    os.makedirs(config.output_dir, exist_ok=True)
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
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=valid,
        data_collator=collator,
        optimizers=(make_optimizer(model, config), None),
        **ranking_evaluation(config.exclude_history),
    )
    train_started = time.time()
    trainer.train()
    train_seconds = time.time() - train_started
    best_step = trainer.state.best_global_step
    # The selected checkpoint was already evaluated on validation during training: reuse that pass.
    valid_metrics = next(
        {key[len("eval_") :]: value for key, value in entry.items() if key.startswith("eval_")}
        for entry in trainer.state.log_history
        if entry.get("step") == best_step and "eval_ndcg@10" in entry
    )
    test_metrics = evaluate_split(trainer, test, "test")  # once, on the checkpoint validation chose

    popularity = {
        split: evaluate_popularity(data, split, config.exclude_history)
        for split in ("valid", "test")
        if config.max_eval_users is None
    }
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
        "validation_curve": [
            {"step": entry["step"], "ndcg@10": entry["eval_ndcg@10"]}
            for entry in trainer.state.log_history
            if "eval_ndcg@10" in entry
        ],
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.time() - started, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"),
        "config": config.to_dict(),
    }
    if not trainer.is_world_process_zero():  # under accelerate/DDP, one process writes
        return results
    checkpoint_dir = os.path.join(config.output_dir, "checkpoint")
    final_model = trainer.model
    if config.lora:
        final_model.save_pretrained(os.path.join(config.output_dir, "lora-adapter"))  # adapter-only checkpoint
        final_model = final_model.merge_and_unload()
    final_model.save_pretrained(checkpoint_dir)
    collator.save_pretrained(checkpoint_dir)  # prompt settings + tokenizer, for evaluation and pipelines
    with open(os.path.join(checkpoint_dir, EXPERIMENT_FILE), "w") as handle:
        json.dump(config.to_dict(), handle, indent=1)

    with open(os.path.join(config.output_dir, "metrics.json"), "w") as handle:
        json.dump(results, handle, indent=1)
    plot_validation(
        trainer.state.log_history,
        os.path.join(config.output_dir, "validation_ndcg10.png"),
        reference={"popularity": popularity["valid"]["ndcg@10"]} if "valid" in popularity else None,
    )
    report = render_report(results)
    with open(os.path.join(config.output_dir, "report.md"), "w") as handle:
        handle.write(report)
    logger.info(report)
    return results


def evaluate_checkpoint(checkpoint_dir: str, split: str = "test", exclude_history: bool | None = None) -> dict:
    """Evaluate a saved checkpoint on the split it was trained for, with the run's own data and prompt settings."""
    from transformers import AutoModel

    with open(os.path.join(checkpoint_dir, EXPERIMENT_FILE)) as handle:
        values = json.load(handle)
    config = ExperimentConfig(
        **{key: value for key, value in values.items() if key in ExperimentConfig.__dataclass_fields__}
    )
    if exclude_history is not None:
        config.exclude_history = exclude_history
    data = load_data(config)
    model = AutoModel.from_pretrained(checkpoint_dir)
    if model.catalog != data.catalog:
        raise ValueError(f"{checkpoint_dir}: the checkpoint's catalog differs from the data's catalog")
    collator = IAMDataCollator.from_pretrained(checkpoint_dir, catalog=data.catalog)
    model.requires_grad_(False)  # inference only: the item-state cache can then serve the frozen intra layers
    if config.item_cache and model.num_leading_intra_layers > 0:
        model.enable_item_cache(collator)
    dataset = eval_subset(data.split(split), config)
    args = training_arguments(
        config,
        1,
        output_dir=os.path.join(checkpoint_dir, "eval-tmp"),
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        eval_on_start=False,
    )
    trainer = Trainer(model=model, args=args, data_collator=collator, **ranking_evaluation(config.exclude_history))
    metrics = evaluate_split(trainer, dataset, split)
    logger.info(protocol_line(config.exclude_history, split))
    logger.info(format_metrics_table({f"{checkpoint_dir}, {split}": metrics}))
    return metrics
