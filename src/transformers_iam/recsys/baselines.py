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


def evaluate_popularity(data: LeaveOneOutData, split: str, exclude_history: bool, ks=DEFAULT_KS) -> dict[str, float]:
    """Rank the catalog by popularity among the interactions visible before the split's targets.

    For ``valid`` that is every training sequence; for ``test`` the training sequences plus
    the validation items.
    """
    visible = data.visible_sequences(split)
    scores = popularity_scores(visible, data.catalog)
    dataset = data.split(split)
    targets = torch.tensor(data.catalog.indices_of(dataset["target"]))
    histories = [data.catalog.indices_of(visible[user]) for user in dataset["user_id"]] if exclude_history else None
    ranks = target_ranks(scores.expand(len(dataset), -1), targets, histories)
    return metrics_from_ranks(ranks, ks)
