"""Ranking evaluation inside the HF Trainer, streamed batch by batch.

The Trainer would otherwise gather a (users x catalog) logits matrix for the whole split;
``preprocess_logits_for_metrics`` turns each batch's logits into target ranks at once, so
only one integer per user is kept.

Example:
    >>> from transformers import Trainer, TrainingArguments
    >>> args = TrainingArguments(output_dir=tmp, label_names=EVAL_LABEL_NAMES, remove_unused_columns=False)
    >>> trainer = Trainer(model, args, eval_dataset=data.valid, data_collator=collator,
    ...                   **ranking_evaluation(exclude_history=True))
    >>> metrics = trainer.evaluate()
    >>> metrics["eval_users"], round(metrics["eval_ndcg@10"], 4)
    (16, 0.1514)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from transformers import EvalPrediction, TrainerCallback

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


class ValidationRanks(TrainerCallback):
    """Keeps the per-user ranks of every validation pass during training, by training step.

    ``compute_metrics`` already holds each pass's ranks (in dataset order); this keeps them, so the ranks of the
    checkpoint validation selects need no second pass over the data. Passes under another metric key prefix than
    ``eval`` (a test evaluation) are not kept.

    Example (``trainer.train()`` validates every ``eval_steps``; here one pass, at step 0: after training,
    ``ranks.by_step[trainer.state.best_global_step]`` are the ranks of the checkpoint validation selects):
        >>> from transformers import Trainer, TrainingArguments
        >>> args = TrainingArguments(output_dir=tmp, label_names=EVAL_LABEL_NAMES, remove_unused_columns=False)
        >>> ranks = ValidationRanks()
        >>> trainer = Trainer(model, args, eval_dataset=data.valid, data_collator=collator, callbacks=[ranks],
        ...                   **ranking_evaluation(True, ranks=ranks))
        >>> _ = trainer.evaluate()
        >>> ranks.by_step
        {0: array([ 7,  5, 12,  8, 11,  7,  7, 15,  7, 12,  5, 16, 11, 13, 15, 13])}
    """

    def __init__(self):
        self.by_step: dict[int, np.ndarray] = {}
        self._last: np.ndarray | None = None

    def record(self, ranks: np.ndarray) -> None:
        self._last = np.asarray(ranks).reshape(-1).copy()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        # the Trainer calls compute_metrics, then on_evaluate with the pass's metrics: the step is known only here
        if self._last is not None and metrics and any(key.startswith("eval_") for key in metrics):
            self.by_step[state.global_step] = self._last
        self._last = None


def ranking_metrics(
    ks: Sequence[int] = DEFAULT_KS, ranks: ValidationRanks | None = None
) -> Callable[[EvalPrediction], dict[str, float]]:
    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        values = prediction.predictions
        values = values[0] if isinstance(values, (tuple, list)) else values
        if ranks is not None:
            ranks.record(values)
        return metrics_from_ranks(values, ks)

    return compute_metrics


def ranking_evaluation(
    exclude_history: bool, ks: Sequence[int] = DEFAULT_KS, ranks: ValidationRanks | None = None
) -> dict:
    """Keyword arguments for ``Trainer(...)`` that make its evaluation a full-catalog ranking.

    Pair them with ``TrainingArguments(label_names=EVAL_LABEL_NAMES, remove_unused_columns=False)``.
    ``trainer.predict(dataset).predictions`` are then the per-user ranks in dataset order; pass ``ranks`` (also given
    to the Trainer as a callback) to keep those of each validation pass during training.
    """
    return {
        "compute_metrics": ranking_metrics(ks, ranks),
        "preprocess_logits_for_metrics": rank_preprocessor(exclude_history),
    }
