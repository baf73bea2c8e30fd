"""Non-LLM baselines scored with the same split and metric code as IAM."""

from __future__ import annotations

from collections import Counter

import torch

from ..core.catalog import ItemCatalog
from .metrics import DEFAULT_KS, metrics_from_ranks, target_ranks
from .split import LeaveOneOutData


def popularity_scores(sequences: dict[str, list[str]], catalog: ItemCatalog) -> torch.Tensor:
    """Interaction count of every catalog item in the given sequences."""
    counts = Counter(item for items in sequences.values() for item in items)
    return torch.tensor([float(counts.get(item_id, 0)) for item_id in catalog.item_ids])


def popularity_ranks(data: LeaveOneOutData, split: str, exclude_history: bool, dataset=None) -> torch.Tensor:
    """Each user's rank of its target when the catalog is ranked by popularity, in the order of ``dataset``
    (default: the whole split; pass a subset of it to rank the same users as a model, or ``data.warm_valid``).

    Popularity counts :meth:`LeaveOneOutData.popularity_sequences`: for ``valid`` every training sequence, for
    ``test`` the training sequences plus the validation items; under the cold-item protocol only what the models
    trained on (the training sequences without cold items) for both, so every cold item counts 0. With
    ``exclude_history`` each row's own history (what a model excludes for that row) leaves the ranking.
    """
    scores = popularity_scores(data.popularity_sequences(split), data.catalog)
    dataset = data.split(split) if dataset is None else dataset
    targets = torch.tensor(data.catalog.indices_of(dataset["target"]))
    histories = [data.catalog.indices_of(history) for history in dataset["history"]] if exclude_history else None
    return target_ranks(scores.expand(len(dataset), -1), targets, histories)


def evaluate_popularity(
    data: LeaveOneOutData, split: str, exclude_history: bool, ks=DEFAULT_KS, dataset=None, return_ranks: bool = False
) -> dict[str, float] | tuple[dict[str, float], dict[str, int]]:
    """Popularity's metrics on a split (or on ``dataset``, a subset of it), from :func:`popularity_ranks`; with
    ``return_ranks`` also ``{user_id: rank}``, for paired comparisons (``recsys/paired.py``).

    Example:
        >>> metrics, ranks = evaluate_popularity(data, "test", True, return_ranks=True)  # doctest: +SKIP
        >>> metrics["users"] == len(ranks)  # doctest: +SKIP
        True
    """
    dataset = data.split(split) if dataset is None else dataset
    ranks = popularity_ranks(data, split, exclude_history, dataset)
    metrics = metrics_from_ranks(ranks, ks)
    if not return_ranks:
        return metrics
    return metrics, {str(user): rank for user, rank in zip(dataset["user_id"], ranks.tolist())}
