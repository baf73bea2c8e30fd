"""Ranking evaluation inside the HF Trainer, streamed batch by batch.

The Trainer would otherwise gather a (users x catalog) logits matrix for the whole split;
``preprocess_logits_for_metrics`` turns each batch's logits into target ranks at once, so
only one integer per user is kept.

Example:
    >>> trainer = Trainer(model, args, eval_dataset=data.valid, data_collator=collator,
    ...                   **ranking_evaluation(exclude_history=True))  # doctest: +SKIP
    >>> trainer.evaluate()["eval_ndcg@10"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import EvalPrediction

from .metrics import DEFAULT_KS, metrics_from_ranks, target_ranks

# The Trainer hands these to preprocess_logits_for_metrics as a tuple, in this order.
EVAL_LABEL_NAMES = ["labels", "history_item_indices"]


def final_targets(labels: torch.Tensor) -> torch.Tensor:
    """One target per user: the labels themselves, or with every-item labels ``(batch, items)`` the last one given
    (the item after the whole history; the model's logits are read there too).

    Example:
        >>> final_targets(torch.tensor([[4, 7, -100], [2, 5, 9]])).tolist()
        [7, 9]
    """
    if labels.dim() == 1:
        return labels
    given = labels != -100
    last = given.shape[1] - 1 - given.flip(-1).long().argmax(-1)
    return labels[torch.arange(labels.shape[0], device=labels.device), last]


def rank_preprocessor(exclude_history: bool) -> Callable:
    def preprocess_logits_for_metrics(logits: torch.Tensor, labels) -> torch.Tensor:
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        targets, history = labels if isinstance(labels, (tuple, list)) else (labels, None)
        return target_ranks(logits, final_targets(targets), history if exclude_history else None)

    return preprocess_logits_for_metrics


def ranking_metrics(ks: Sequence[int] = DEFAULT_KS) -> Callable[[EvalPrediction], dict[str, float]]:
    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        ranks = prediction.predictions
        ranks = ranks[0] if isinstance(ranks, (tuple, list)) else ranks
        return metrics_from_ranks(ranks, ks)

    return compute_metrics


def ranking_evaluation(exclude_history: bool, ks: Sequence[int] = DEFAULT_KS) -> dict:
    """Keyword arguments for ``Trainer(...)`` that make its evaluation a full-catalog ranking.

    Pair them with ``TrainingArguments(label_names=EVAL_LABEL_NAMES, remove_unused_columns=False)``.
    """
    return {"compute_metrics": ranking_metrics(ks), "preprocess_logits_for_metrics": rank_preprocessor(exclude_history)}
