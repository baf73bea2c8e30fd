"""Removing items from a ranking: the one place where history exclusion happens."""

from __future__ import annotations

import torch


def exclude_items(scores: torch.Tensor, item_indices: torch.Tensor | list[list[int]]) -> torch.Tensor:
    """Set the given catalog indices (per row; -1 pads) to -inf, so they are never ranked."""
    if not isinstance(item_indices, torch.Tensor):
        width = max((len(row) for row in item_indices), default=0)
        item_indices = torch.tensor([list(row) + [-1] * (width - len(row)) for row in item_indices], dtype=torch.long)
    item_indices = item_indices.to(scores.device)
    if item_indices.shape[0] != scores.shape[0]:
        raise ValueError(f"got exclusions for {item_indices.shape[0]} users but scores for {scores.shape[0]}")
    if item_indices.numel() and int(item_indices.max()) >= scores.shape[1]:
        raise ValueError(
            f"an excluded item index ({int(item_indices.max())}) is outside the catalog ({scores.shape[1]})"
        )
    if item_indices.numel() and int(item_indices.min()) < -1:
        # -1 is the only padding value; any other negative index would silently exclude nothing
        raise ValueError(
            f"excluded item indices must be catalog indices in [0, {scores.shape[1]}) or -1 (padding), "
            f"got {int(item_indices.min())}"
        )
    valid = item_indices >= 0
    rows = torch.arange(scores.shape[0], device=scores.device)[:, None].expand_as(item_indices)
    scores = scores.clone()
    scores[rows[valid], item_indices[valid]] = float("-inf")
    return scores


__all__ = ["exclude_items"]
