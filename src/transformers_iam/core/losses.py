"""The training loss: cross-entropy over the whole catalog, of one target per row or of a target after every item."""

from __future__ import annotations

import torch
from torch import nn


def check_catalog_indices(labels: torch.Tensor, num_items: int) -> None:
    """Refuse targets outside the catalog (they would index past the adapter's rows, or silently wrap)."""
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_items):
        raise ValueError(
            f"labels must be catalog indices in [0, {num_items}), got [{int(labels.min())}, {int(labels.max())}]"
        )


def catalog_cross_entropy(
    adapter: nn.Module,
    logits: torch.Tensor,
    hidden: torch.Tensor,
    labels: torch.Tensor,
    item_ends: torch.Tensor | None,
    num_items: int,
) -> torch.Tensor:
    """Cross-entropy over the whole catalog. Without ``item_ends`` (``supervision="last"``) of ``logits`` against one
    target per row; with them (``"every_item"``) of the adapter's scores read at each item's end (``hidden`` at
    ``item_ends``) against the target after that item, averaged over every target of the batch.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0, 0.0]])
        >>> round(float(catalog_cross_entropy(None, logits, None, torch.tensor([0]), None, 3)), 4)
        0.2395
    """
    labels = labels.to(logits.device)
    if item_ends is not None:
        if labels.shape != item_ends.shape:
            raise ValueError(
                f"every-item labels have shape {tuple(labels.shape)} but the batch has {tuple(item_ends.shape)} "
                "(batch, items): one target after each item, -100 where there is none (config.supervision)"
            )
        targeted = labels != -100
        if (targeted & (item_ends < 0)).any():
            raise ValueError("every-item labels give a target after an item that is not in the row")
        check_catalog_indices(labels[targeted], num_items)
        item_logits = adapter(hidden[targeted.nonzero(as_tuple=True)[0], item_ends[targeted]])
        return nn.functional.cross_entropy(item_logits.float(), labels[targeted])
    if labels.dim() > 1 and labels.shape[1] != 1:
        raise ValueError(
            f"labels of shape {tuple(labels.shape)}: with config.supervision='last' each row has one target "
            "(batch,); every-item targets (batch, items) need config.supervision='every_item'"
        )
    labels = labels.view(-1)
    if labels.numel() != logits.shape[0]:
        raise ValueError(f"labels has {labels.numel()} entries for a batch of {logits.shape[0]}")
    check_catalog_indices(labels, num_items)
    return nn.functional.cross_entropy(logits.float(), labels)


__all__ = ["catalog_cross_entropy", "check_catalog_indices"]
