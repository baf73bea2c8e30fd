"""Where scores become ranks and ranks become metrics.

Full-catalog ranking (docs/architecture.md, "Evaluation protocol").

The rank of a target is pessimistic: the number of items scoring at least as high as the
target (the target included), so ties never flatter a model. One target per user, so
HR@K equals Recall@K.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from ..core.ranking import exclude_items

DEFAULT_KS = (5, 10, 20)


def target_ranks(
    scores: torch.Tensor,
    targets: torch.Tensor,
    exclude_item_indices: torch.Tensor | Sequence[Sequence[int]] | None = None,
) -> torch.Tensor:
    """1-based pessimistic rank of each target among all catalog items.

    ``exclude_item_indices`` (per row, -1 pads) are removed from the ranking, except the
    target itself, which is always ranked. For a catalog too large for a ``[users x items]``
    matrix, ``core.ranking.chunked_target_ranks`` gives the same ranks from the user states
    and the adapter's rows, a chunk of items at a time.

    Example:
        >>> target_ranks(torch.tensor([[0.1, 0.5, 0.5, 0.2]]), torch.tensor([2]))
        tensor([2])
        >>> target_ranks(torch.tensor([[0.1, 0.5, 0.5, 0.2]]), torch.tensor([2]), [[1]])
        tensor([1])
    """
    scores = scores.float()
    targets = targets.to(scores.device).long().view(-1)
    rows = torch.arange(scores.shape[0], device=scores.device)
    target_scores = scores[rows, targets]
    if torch.isnan(target_scores).any():
        raise ValueError("a target's score is NaN: its rank would be meaningless")
    if exclude_item_indices is not None:
        scores = exclude_items(scores, exclude_item_indices)
        scores[rows, targets] = target_scores  # a target is always ranked, even if it is in the history
    return (scores >= target_scores[:, None]).sum(-1)


def metrics_from_ranks(
    ranks: Iterable[int] | np.ndarray | torch.Tensor, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """HR@K, NDCG@K and MRR@K (means over users) from 1-based ranks.

    Example:
        >>> metrics_from_ranks([1, 3], ks=[1, 5])["ndcg@5"]
        0.75
    """
    ranks = np.asarray(ranks.cpu() if isinstance(ranks, torch.Tensor) else list(ranks), dtype=np.float64).reshape(-1)
    if ranks.size == 0:
        raise ValueError("no ranks to compute metrics from")
    if (ranks < 1).any():
        raise ValueError("ranks are 1-based")
    metrics = {}
    for k in ks:
        hit = ranks <= k
        metrics[f"hr@{k}"] = float(hit.mean())
        metrics[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean())
        metrics[f"mrr@{k}"] = float(np.where(hit, 1.0 / ranks, 0.0).mean())
    metrics["users"] = int(ranks.size)
    return metrics


def protocol_line(exclude_history: bool, split: str) -> str:
    return (
        f"protocol: leave-one-out, {split} split, full-catalog ranking (no sampled negatives), "
        f"pessimistic ties, history items {'excluded' if exclude_history else 'kept'} in the ranking"
    )


def format_metrics_table(rows: dict[str, dict[str, float]], ks: Sequence[int] = DEFAULT_KS) -> str:
    """A markdown table: one row per model, HR/NDCG/MRR at each K."""
    names = [f"{metric}@{k}" for k in ks for metric in ("hr", "ndcg", "mrr")]
    lines = [
        "| model | users | " + " | ".join(names) + " |",
        "| --- | --- | " + " | ".join("---" for _ in names) + " |",
    ]
    for model, metrics in rows.items():
        cells = [f"{metrics[name]:.4f}" if not math.isnan(metrics[name]) else "nan" for name in names]
        lines.append(f"| {model} | {metrics.get('users', '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
