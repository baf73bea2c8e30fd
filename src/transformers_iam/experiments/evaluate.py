"""Evaluating a saved checkpoint again, on its run's split, with the run's own data and prompt settings."""

from __future__ import annotations

import json
import os

from transformers import Trainer
from transformers.utils import logging

from ..core.collator import IAMDataCollator
from ..recsys.evaluation import ranking_evaluation
from ..recsys.metrics import format_metrics_table, protocol_line
from .build import eval_subset, item_cache_dir, load_data
from .run import evaluate_split
from .run_arguments import EXPERIMENT_FILE, RunArguments

logger = logging.get_logger(__name__)


def load_checkpoint_run(checkpoint_dir: str, exclude_history: bool | None = None):
    """``(run, data, model, collator)`` of a saved run: its arguments, its split (the catalog checked against the
    checkpoint's), the model in inference mode with the item-state cache where it applies, and the collator with the
    run's prompt settings."""
    from transformers import AutoModel

    with open(os.path.join(checkpoint_dir, EXPERIMENT_FILE), encoding="utf-8") as handle:
        run = RunArguments.from_dict(json.load(handle))
    if exclude_history is not None:
        run.data.exclude_history = exclude_history
    data = load_data(run)
    model = AutoModel.from_pretrained(checkpoint_dir)
    # under the cold-item protocol the saved model has the cold items after the warm ones (added after training)
    catalog = data.catalog_after_training
    if model.catalog != catalog:
        raise ValueError(
            f"{checkpoint_dir}: the checkpoint's catalog ({len(model.catalog)} items) differs from its run's data's "
            f"({len(catalog)} items"
            + (f", {len(data.cold_items)} of them cold, added last" if data.cold_items else "")
            + ")"
        )
    collator = IAMDataCollator.from_pretrained(checkpoint_dir, catalog=catalog)
    model.requires_grad_(False)  # inference only: the item-state cache can then serve the frozen intra layers
    if run.model.item_cache and model.num_leading_intra_layers > 0:
        run_dir = os.path.dirname(os.path.abspath(checkpoint_dir))  # the checkpoint is <run>/checkpoint
        model.enable_item_cache(collator, cache_dir=item_cache_dir(run, run_dir, added_items=bool(data.cold_items)))
    return run, data, model, collator


def evaluate_checkpoint(checkpoint_dir: str, split: str = "test", exclude_history: bool | None = None) -> dict:
    """Evaluate a saved checkpoint on the split it was trained for, with the run's own data and prompt settings."""
    run, data, model, collator = load_checkpoint_run(checkpoint_dir, exclude_history)
    dataset = eval_subset(data.split(split), run.data)
    args = run.training.for_run(
        1,
        output_dir=os.path.join(checkpoint_dir, "eval-tmp"),
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        eval_on_start=False,
    )
    exclude = run.data.exclude_history
    trainer = Trainer(model=model, args=args, data_collator=collator, **ranking_evaluation(exclude))
    metrics, _ = evaluate_split(trainer, dataset, split)
    logger.info(protocol_line(exclude, split))
    logger.info(format_metrics_table({f"{checkpoint_dir}, {split}": metrics}))
    return metrics
