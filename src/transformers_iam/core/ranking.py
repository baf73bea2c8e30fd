"""Removing items from a ranking: the one place where history exclusion happens, and where exclusions are checked."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch


def _is_index(value) -> bool:
    # a bool is an Integral too, and a float 3.0 would pass torch.tensor(..., dtype=long) as 3 (3.7 as 3): neither is
    # a catalog index a caller meant
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_exclusions(
    item_indices: torch.Tensor | Sequence[Sequence[int]],
    num_users: int,
    num_items: int,
    name: str = "item_indices",
) -> torch.Tensor:
    """``item_indices`` checked and as a ``(num_users, n)`` long tensor (lists padded with -1): per user, catalog
    indices in ``[0, num_items)`` or -1 (padding); a 2-D integer tensor or a list of lists of ints. ``name`` is the
    argument the caller took them as, for the messages, which also name the user row and the bad value.

    Example:
        >>> check_exclusions([[3], [0, 1]], num_users=2, num_items=5).tolist()
        [[3, -1], [0, 1]]
        >>> check_exclusions([[3], [7]], num_users=2, num_items=5, name="exclude")
        Traceback (most recent call last):
        ...
        ValueError: exclude: user 1 has 7: excluded item indices must be catalog indices in [0, 5) or -1 (padding)
    """
    if isinstance(item_indices, torch.Tensor):
        if item_indices.dtype == torch.bool or item_indices.dtype.is_floating_point or item_indices.is_complex():
            raise ValueError(f"{name} must hold integer catalog indices, got a {item_indices.dtype} tensor")
        if item_indices.dim() != 2:
            raise ValueError(
                f"{name} must be 2-D [users, items] (-1 pads), got shape {tuple(item_indices.shape)}"
                + (": for one user pass it as [indices] or tensor[None]" if item_indices.dim() == 1 else "")
            )
        tensor = item_indices.long()
    elif isinstance(item_indices, Sequence) and not isinstance(item_indices, (str, bytes)):
        tensor = _rows_to_tensor(item_indices, num_items, name)
    else:
        raise ValueError(
            f"{name} must be a 2-D integer tensor or a list of lists of catalog indices (one list per user), got "
            f"{type(item_indices).__name__}"
        )
    if tensor.shape[0] != num_users:
        raise ValueError(f"{name} has rows for {tensor.shape[0]} users but the inputs have {num_users}")
    if tensor.numel():
        bad = (tensor < -1) | (tensor >= num_items)
        if bool(bad.any()):  # one host sync; the message is built only on failure
            row, column = (int(position) for position in bad.nonzero()[0])
            raise ValueError(_outside(name, row, int(tensor[row, column]), num_items))
    return tensor


def _outside(name: str, row: int, value, num_items: int) -> str:
    # "excluded item indices must be" is what callers (and tests) match on: keep it in every such message
    return (
        f"{name}: user {row} has {value!r}: excluded item indices must be catalog indices in [0, {num_items}) or -1 "
        "(padding)"
    )


def _rows_to_tensor(rows: Sequence[Sequence[int]], num_items: int, name: str) -> torch.Tensor:
    """A list of per-user lists as a -1-padded long tensor, every value checked in Python first (see ``_is_index``)."""
    for row_index, row in enumerate(rows):
        if isinstance(row, (str, bytes)) or not isinstance(row, Sequence):
            raise ValueError(
                f"{name}: user {row_index} must be a list of catalog indices, got {type(row).__name__} {row!r:.80}"
            )
        for value in row:
            if not _is_index(value):
                raise ValueError(
                    f"{name}: user {row_index} has {value!r} ({type(value).__name__}): excluded item indices must be "
                    f"int catalog indices in [0, {num_items}) or -1 (padding)"
                )
    width = max((len(row) for row in rows), default=0)
    return torch.tensor([[int(value) for value in row] + [-1] * (width - len(row)) for row in rows], dtype=torch.long)


def exclude_items(
    scores: torch.Tensor, item_indices: torch.Tensor | Sequence[Sequence[int]], name: str = "item_indices"
) -> torch.Tensor:
    """Set the given catalog indices (per row; -1 pads) to -inf, so they are never ranked. ``item_indices`` is
    checked by :func:`check_exclusions` (``name``: the caller's argument, for its messages).

    Example:
        >>> exclude_items(torch.zeros(1, 4), [[1, 3]]).tolist()
        [[0.0, -inf, 0.0, -inf]]
    """
    item_indices = check_exclusions(item_indices, scores.shape[0], scores.shape[1], name).to(scores.device)
    valid = item_indices >= 0
    rows = torch.arange(scores.shape[0], device=scores.device)[:, None].expand_as(item_indices)
    scores = scores.clone()
    scores[rows[valid], item_indices[valid]] = float("-inf")
    return scores


__all__ = ["check_exclusions", "exclude_items"]
