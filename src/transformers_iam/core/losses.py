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


def sampling_log_frequency(item_counts: torch.Tensor) -> torch.Tensor:
    """The sampled loss's log frequencies from training-target counts: ``log(counts + 1)``, so that an item never a
    target can still be drawn as a negative (``draw_negatives`` refuses a zero frequency).

    Example:
        >>> sampling_log_frequency(torch.tensor([3.0, 0.0])).exp()
        tensor([4., 1.])
    """
    return (item_counts.float() + 1).log()


def draw_negatives(
    log_frequency: torch.Tensor, num_negatives: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``num_negatives`` distinct items drawn by how frequent they are (``exp(log_frequency)``), and the log of each
    one's inclusion probability. Priority sampling (Duffield, Lund and Thorup 2007): each item's priority is its
    frequency over a uniform draw, the ``num_negatives`` highest are kept, and with the next priority as threshold
    ``t`` an item's inclusion probability is ``min(1, q / t)``; dividing by it makes a sum over the drawn items an
    unbiased estimate of the sum over the catalog. The whole catalog, with log inclusion 0, when ``num_negatives``
    reaches its size.

    Example:
        >>> items, log_inclusion = draw_negatives(torch.zeros(10), 4, torch.Generator().manual_seed(0))
        >>> items.unique().numel(), bool((log_inclusion <= 0).all())
        (4, True)
    """
    if not torch.isfinite(log_frequency).all():
        # a zero frequency (log 0) could become the threshold and turn a weight into nan: counts are smoothed instead
        raise ValueError(
            "log_frequency must be finite, e.g. sampling_log_frequency(counts) = log(counts + 1); got "
            f"{int((~torch.isfinite(log_frequency)).sum())} non-finite entries"
        )
    log_probability = torch.log_softmax(log_frequency.float(), dim=0)
    num_items = log_probability.numel()
    if num_negatives >= num_items:
        return torch.arange(num_items, device=log_probability.device), torch.zeros_like(log_probability)
    uniform = torch.rand(num_items, generator=generator, device=log_probability.device)
    log_priority = log_probability - torch.log1p(-uniform)  # 1 - uniform is in (0, 1]: no log of 0
    top = torch.topk(log_priority, num_negatives + 1)
    items = top.indices[:num_negatives]
    return items, (log_probability[items] - top.values[num_negatives]).clamp(max=0.0)


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

    Each state is scored against its own target and ``num_negatives`` distinct items drawn in proportion to how often
    items are training targets (``log_frequency``: log(counts + 1); uniform when zero), shared by the batch:
    a ``[targets x (1 + negatives)]`` score matrix instead of ``[targets x catalog]``. Each negative's score is
    lowered by the log of its probability of being drawn (the logQ correction, Yi et al. 2019, "Sampling-bias-
    corrected neural modeling", with the inclusion probabilities of ``draw_negatives``), so that the negatives
    estimate the rest of the full softmax's denominator without bias; the row's own target is not drawn but always
    there, and is not corrected (Khrylchenko et al. 2025, "Correcting the LogQ Correction"). A drawn item that is the
    row's own target is not a negative: it is masked out. The other rows' targets are not candidates: a batch's
    targets come a few users at a time (with every-item supervision, each user's whole history), so they are not
    draws from the frequencies the correction assumes (docs/architecture.md). ``kept_items``: as for the adapter's
    ``item_rows`` (training with ``config.new_item_dropout``). With ``num_negatives`` at the catalog's size it is the
    full cross-entropy.

    Example:
        >>> from transformers_iam.core.adapter import IAMRecommendationAdapter
        >>> adapter = IAMRecommendationAdapter(model.config)
        >>> states = torch.randn(4, model.config.text_config.hidden_size)
        >>> loss = sampled_softmax_cross_entropy(adapter, states, torch.tensor([1, 2, 2, 7]), 8, torch.zeros(20))
        >>> loss.shape, bool(loss > 0)
        (torch.Size([]), True)
    """
    device = adapter.item_embeddings.weight.device
    labels = labels.to(device)
    negatives, log_inclusion = draw_negatives(log_frequency.to(device), num_negatives, generator)
    weight, bias = adapter.item_rows(torch.cat([labels, negatives]), kept_items)
    projected = adapter.project(states.to(weight.dtype))
    num_targets = labels.numel()
    own = ((projected * weight[:num_targets]).sum(-1) + bias[:num_targets]).float()
    others = (projected @ weight[num_targets:].T + bias[num_targets:]).float() - log_inclusion
    others = others.masked_fill(negatives[None, :] == labels[:, None], float("-inf"))
    scores = torch.cat([own[:, None], others], dim=1)
    return nn.functional.cross_entropy(scores, torch.zeros(num_targets, dtype=torch.long, device=device))


__all__ = [
    "catalog_cross_entropy",
    "check_catalog_indices",
    "draw_negatives",
    "sampled_softmax_cross_entropy",
    "sampling_log_frequency",
    "targeted_states",
]
