"""The training loss: cross-entropy over the whole catalog, or over sampled candidates for large catalogs (sampled
softmax with the logQ correction), of one target per row or of a target after every item."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

# the most scores the every-item loss holds at once in evaluation (rows of targets x catalog items)
EVALUATION_LOSS_SCORES = 1 << 24


def check_catalog_indices(labels: torch.Tensor, num_items: int) -> None:
    """Refuse targets outside the catalog (they would index past the adapter's rows, or silently wrap)."""
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_items):
        raise ValueError(
            f"labels must be catalog indices in [0, {num_items}), got [{int(labels.min())}, {int(labels.max())}]"
        )


def targeted_states(
    pooled: torch.Tensor, hidden: torch.Tensor, labels: torch.Tensor, item_ends: torch.Tensor | None, num_items: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The states the adapter scores in training and their targets, checked: without ``item_ends``
    (``supervision="last"``) ``pooled`` against one target per row; with them (``"every_item"``) ``hidden`` read at
    each item's end against the target after that item (``-100`` where there is none)."""
    labels = labels.to(pooled.device)
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
        return hidden[targeted.nonzero(as_tuple=True)[0], item_ends[targeted]], labels[targeted]
    if labels.dim() > 1 and labels.shape[1] != 1:
        raise ValueError(
            f"labels of shape {tuple(labels.shape)}: with config.supervision='last' each row has one target "
            "(batch,); every-item targets (batch, items) need config.supervision='every_item'"
        )
    labels = labels.view(-1)
    if labels.numel() != pooled.shape[0]:
        raise ValueError(f"labels has {labels.numel()} entries for a batch of {pooled.shape[0]}")
    check_catalog_indices(labels, num_items)
    return pooled, labels


def catalog_cross_entropy(
    score: Callable[[torch.Tensor], torch.Tensor] | None,
    logits: torch.Tensor,
    hidden: torch.Tensor,
    labels: torch.Tensor,
    item_ends: torch.Tensor | None,
    num_items: int,
) -> torch.Tensor:
    """Cross-entropy over the whole catalog. Without ``item_ends`` (``supervision="last"``) of ``logits`` against one
    target per row; with them (``"every_item"``) of the scores ``score`` gives (the adapter's) read at each item's
    end (``hidden`` at ``item_ends``) against the target after that item, averaged over every target of the batch;
    without a gradient (evaluation) scored ``EVALUATION_LOSS_SCORES // num_items`` targets at a time.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0, 0.0]])
        >>> round(float(catalog_cross_entropy(None, logits, None, torch.tensor([0]), None, 3)), 4)
        0.2395
    """
    states, targets = targeted_states(logits, hidden, labels, item_ends, num_items)
    if item_ends is None:
        return nn.functional.cross_entropy(logits.float(), targets)
    if torch.is_grad_enabled():
        return nn.functional.cross_entropy(score(states).float(), targets)
    # evaluation: a chunk of targets at a time, never the [targets x catalog] matrix (a million items would make
    # the Trainer's evaluation batch of 64 users and their 3,000 targets 12 GB of scores)
    rows = max(1, EVALUATION_LOSS_SCORES // num_items)
    total = sum(
        nn.functional.cross_entropy(
            score(states[start : start + rows]).float(), targets[start : start + rows], reduction="sum"
        )
        for start in range(0, targets.numel(), rows)
    )
    return total / max(1, targets.numel())


def sampled_softmax_cross_entropy(
    adapter: nn.Module,
    states: torch.Tensor,
    labels: torch.Tensor,
    num_negatives: int,
    log_frequency: torch.Tensor,
    generator: torch.Generator | None = None,
    kept_items: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy over sampled candidates instead of the whole catalog (``config.num_sampled_negatives``).

    Each state is scored against the batch's targets (in-batch negatives: other rows' targets) and ``num_negatives``
    items drawn uniformly from the catalog, shared by the batch: a ``[targets x (targets + negatives)]`` score
    matrix instead of ``[targets x catalog]``. The targets are drawn as often as items are targets, so popular items
    would be pushed down more than the full softmax pushes them: every candidate's score is lowered by the log of its
    expected count among the candidates (the logQ correction, Yi et al. 2019, "Sampling-bias-corrected neural
    modeling"), ``targets x p(item) + negatives / catalog``, with ``p`` from ``log_frequency`` (the training
    targets' log counts; uniform when zero). The row's own target is not corrected: it is not drawn but always
    present, and the corrected candidates estimate the rest of the full softmax's denominator (Khrylchenko et al.
    2025, "Correcting the LogQ Correction"). A candidate that is the row's own target elsewhere in the set (another
    row's equal target, or a sampled copy) is not a negative: it is masked out. ``kept_items``: as for the adapter's
    ``item_rows`` (training with ``config.new_item_dropout``).

    Example:
        >>> from transformers_iam.core.adapter import IAMRecommendationAdapter
        >>> adapter = IAMRecommendationAdapter(model.config)
        >>> states = torch.randn(4, model.config.text_config.hidden_size)
        >>> loss = sampled_softmax_cross_entropy(adapter, states, torch.tensor([1, 2, 2, 7]), 8, torch.zeros(20))
        >>> loss.shape, bool(loss > 0)
        (torch.Size([]), True)
    """
    num_items = log_frequency.shape[0]
    device = adapter.item_embeddings.weight.device
    negatives = torch.randint(num_items, (num_negatives,), device=device, generator=generator)
    candidates = torch.cat([labels.to(device), negatives])
    weight, bias = adapter.item_rows(candidates, kept_items)
    projected = adapter.project(states.to(weight.dtype))
    scores = (projected @ weight.T + bias).float()
    probability = torch.softmax(log_frequency.float(), dim=0)
    expected_count = labels.numel() * probability[candidates] + num_negatives / num_items
    log_count = expected_count.log()
    scores = scores - log_count
    # a row's own target is not drawn, it is always there: only the other candidates estimate the rest of the full
    # softmax's denominator, so its score is given back its correction (left corrected, its share of the softmax
    # would be divided by its expected count: too large a loss where that is above 1, too small below)
    scores.diagonal().add_(log_count[: labels.numel()])
    rows = torch.arange(labels.numel(), device=scores.device)
    own_target = candidates[None, :] == candidates[rows, None]
    own_target[rows, rows] = False  # the positive itself stays
    scores = scores.masked_fill(own_target, float("-inf"))
    return nn.functional.cross_entropy(scores, rows)


__all__ = ["catalog_cross_entropy", "check_catalog_indices", "sampled_softmax_cross_entropy", "targeted_states"]
