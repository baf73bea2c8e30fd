"""Removing items from a ranking: the one place where history exclusion happens, and where exclusions are checked; and
ranking a catalog too large for one ``[users x items]`` score matrix, in chunks of items (exact top-k, target ranks)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F

# Above this many catalog items, ``recommend`` and the pipeline score the catalog in chunks of ``DEFAULT_CHUNK_SIZE``
# items (one [users x chunk] matrix at a time) instead of one [users x items] matrix (docs/architecture.md, "Ranking a
# large catalog"). Below it, the one matrix is small (1 MiB per user) and one matmul is the fastest.
CHUNKED_RANKING_THRESHOLD = 262_144
DEFAULT_CHUNK_SIZE = 65_536


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


def items_left(exclusions: torch.Tensor, num_items: int) -> torch.Tensor:
    """Per user, the catalog items not excluded: ``num_items`` less the distinct indices of a checked ``exclusions``
    (a repeated index or the -1 padding removes nothing).

    Example:
        >>> items_left(torch.tensor([[3, 3, -1], [0, 1, 2]]), num_items=5).tolist()
        [4, 2]
    """
    ordered = exclusions.sort(dim=1).values
    distinct = ordered >= 0
    distinct[:, 1:] &= ordered[:, 1:] != ordered[:, :-1]
    return num_items - distinct.sum(1)


def check_items_left(exclusions: torch.Tensor, k: int, num_items: int) -> None:
    """Refuse a ``k`` larger than what a user has left after their exclusions (a checked ``(users, n)`` tensor): a
    top-k would fill the missing places with excluded items."""
    left = items_left(exclusions, num_items)
    if bool((left < k).any()):
        row = int((left < k).nonzero()[0, 0])
        raise ValueError(
            f"k={k} but user {row} has only {int(left[row])} items left after excluding {num_items - int(left[row])}; "
            f"pass k <= {int(left.min())} (or exclude fewer items)"
        )


def ranking_chunk_size(chunk_size: int | None, num_items: int) -> int | None:
    """How many items to score at a time: ``chunk_size`` when given (an int >= 1), else ``DEFAULT_CHUNK_SIZE`` for a
    catalog over ``CHUNKED_RANKING_THRESHOLD`` items, else ``None`` (one [users x items] matrix).

    Example:
        >>> ranking_chunk_size(None, 1_000), ranking_chunk_size(None, 1_000_000), ranking_chunk_size(8, 1_000)
        (None, 65536, 8)
    """
    if chunk_size is None:
        return DEFAULT_CHUNK_SIZE if num_items > CHUNKED_RANKING_THRESHOLD else None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1 (items scored at a time), got {chunk_size!r}")
    return chunk_size


def _chunks(num_items: int, chunk_size: int):
    for start in range(0, num_items, chunk_size):
        yield start, min(start + chunk_size, num_items)


def _chunk_scores(user_states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, start: int, stop: int):
    # the adapter's own computation (nn.Linear) on a slice of its rows, in its dtype, then float32 as recommend ranks
    return F.linear(user_states, weight[start:stop], None if bias is None else bias[start:stop]).float()


def _excluded_in(exclusions: torch.Tensor | None, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(rows, columns within the chunk) of the exclusions that fall in ``[start, stop)``."""
    if exclusions is None:
        return None
    inside = (exclusions >= start) & (exclusions < stop)
    rows, columns = inside.nonzero(as_tuple=True)
    return rows, exclusions[rows, columns] - start


def _chunk_candidates(scores: torch.Tensor, k: int, start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A chunk's top-``k`` (``k`` <= its width), where a tie at the k-th score keeps the lower catalog indices (the
    rule the merge then applies across chunks), as (scores, catalog indices)."""
    top = scores.topk(k, dim=1)
    if bool(torch.isnan(top.values[:, 0]).any()):  # topk puts a NaN first
        raise ValueError("a score is NaN: a ranking of NaN scores would be meaningless")
    kth = top.values[:, -1:]
    tied = scores == kth
    if bool((tied.sum(1) == (top.values == kth).sum(1)).all()):  # every item tied at the k-th is in: topk's set
        return top.values, top.indices + start
    above = scores > kth
    needed = k - above.sum(1, keepdim=True)
    taken = above | (tied & (tied.cumsum(1) <= needed))  # exactly k per row, in row-major (index) order
    columns = taken.nonzero(as_tuple=True)[1].view(scores.shape[0], k)
    return scores.gather(1, columns), columns + start


def _best_first(scores: torch.Tensor, indices: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best of each row, by score descending, then catalog index ascending."""
    by_index = indices.argsort(dim=1, stable=True)
    scores, indices = scores.gather(1, by_index), indices.gather(1, by_index)
    order = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
    return scores.gather(1, order), indices.gather(1, order)


@torch.no_grad()
def chunked_topk(
    user_states: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    k: int,
    exclude: torch.Tensor | Sequence[Sequence[int]] | None = None,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
    name: str = "exclude",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact top-``k`` of ``F.linear(user_states, weight, bias)`` (float32, the adapter's scores) without the
    ``[users x items]`` matrix: ``chunk_size`` items are scored at a time and merged into a running top-k, so at most
    a ``[users x chunk_size]`` matrix is held.

    ``user_states`` ``(users, d)``: ``model.user_states(...)`` (the adapter's ``project``); ``weight`` ``(items, d)``
    and ``bias`` ``(items,)``: ``model.adapter.item_rows()``. ``exclude``: catalog indices never to return, per
    user, as for :func:`exclude_items` (``name`` names it in errors); a ``k`` over what a user has left is refused.
    ``chunk_size=None``: as :func:`ranking_chunk_size` chooses (one chunk below ``CHUNKED_RANKING_THRESHOLD``).
    Returns ``(scores, indices)``, ``(users, k)``, best first: the scores and the items of ``torch.topk`` over the
    whole matrix. Ties are ordered deterministically, lower catalog index first, whatever the chunk size (``torch.topk``
    orders tied scores arbitrarily); a NaN score is refused.

    Example:
        >>> weight, bias = torch.randn(1_000, 8), torch.randn(1_000)
        >>> users = torch.randn(2, 8)
        >>> scores, indices = chunked_topk(users, weight, bias, k=5, exclude=[[7], []], chunk_size=128)
        >>> full = exclude_items(F.linear(users, weight, bias), [[7], []]).topk(5)
        >>> torch.equal(indices, full.indices), torch.allclose(scores, full.values)
        (True, True)
    """
    num_users, num_items = user_states.shape[0], weight.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_items:
        raise ValueError(f"k must be an int in [1, {num_items}] (the number of items), got {k!r}")
    chunk_size = ranking_chunk_size(chunk_size, num_items) or num_items
    exclusions = None
    if exclude is not None:
        exclusions = check_exclusions(exclude, num_users, num_items, name).to(weight.device)
        check_items_left(exclusions, k, num_items)
    best_scores = torch.empty(num_users, 0, device=weight.device)
    best_indices = torch.empty(num_users, 0, dtype=torch.long, device=weight.device)
    for start, stop in _chunks(num_items, chunk_size):
        scores = _chunk_scores(user_states, weight, bias, start, stop)
        excluded = _excluded_in(exclusions, start, stop)
        if excluded is not None:
            scores[excluded] = float("-inf")
        chunk_scores, chunk_indices = _chunk_candidates(scores, min(k, stop - start), start)
        best_scores, best_indices = _best_first(
            torch.cat([best_scores, chunk_scores], 1), torch.cat([best_indices, chunk_indices], 1), k
        )
    return best_scores, best_indices


def model_top_k(
    model, inputs: dict, k: int, exclusions: torch.Tensor | None, chunk_size: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``IAMForCausalRecommendation.recommend``'s ranking of its checked ``inputs`` and ``exclusions``: the top-``k``
    of the forward's logits (float32), or with a ``chunk_size`` (:func:`ranking_chunk_size`) that of the model's
    ``user_states`` against its adapter rows by :func:`chunked_topk`, never a ``[users x items]`` matrix."""
    if chunk_size is None:
        logits = model(**inputs).logits.float()
        if exclusions is not None:
            logits = exclude_items(logits, exclusions, "exclude_item_ids")
        return logits.topk(k, dim=-1)
    weight, bias = model.adapter.item_rows()
    return chunked_topk(model.user_states(**inputs), weight, bias, k, exclusions, chunk_size)


@torch.no_grad()
def chunked_target_ranks(
    user_states: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    exclude: torch.Tensor | Sequence[Sequence[int]] | None = None,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """``recsys.metrics.target_ranks`` of the scores ``F.linear(user_states, weight, bias)``, without the
    ``[users x items]`` matrix: the 1-based pessimistic rank of each target, the number of items scoring at least as
    high as it (itself included), items in ``exclude`` (per user, -1 pads) not counted unless the target is one.

    A target's score is read from the very computation that scores its chunk, so an item whose row equals the
    target's ties with it exactly as in the full matrix; the chunks holding a target are scored twice (once for the
    target's score, once to count), at most twice the work of one pass.

    Example:
        >>> weight, bias = torch.randn(1_000, 8), torch.randn(1_000)
        >>> users, targets = torch.randn(2, 8), torch.tensor([3, 500])
        >>> scores = exclude_items(F.linear(users, weight, bias), [[1], [2]])
        >>> target_scores = scores[[0, 1], targets]
        >>> expected = (scores >= target_scores[:, None]).sum(1)
        >>> torch.equal(chunked_target_ranks(users, weight, bias, targets, [[1], [2]], chunk_size=128), expected)
        True
    """
    num_users, num_items = user_states.shape[0], weight.shape[0]
    chunk_size = ranking_chunk_size(chunk_size, num_items) or num_items
    targets = torch.as_tensor(targets).to(weight.device).long().view(-1)
    if targets.numel() != num_users or bool(((targets < 0) | (targets >= num_items)).any()):
        raise ValueError(f"targets must be {num_users} catalog indices in [0, {num_items}), got {targets.tolist()[:8]}")
    exclusions = None if exclude is None else check_exclusions(exclude, num_users, num_items).to(weight.device)
    target_scores = torch.empty(num_users, device=weight.device)
    for start in sorted(set((targets // chunk_size * chunk_size).tolist())):
        stop = min(start + chunk_size, num_items)
        rows = ((targets >= start) & (targets < stop)).nonzero(as_tuple=True)[0]
        target_scores[rows] = _chunk_scores(user_states, weight, bias, start, stop)[rows, targets[rows] - start]
    if bool(torch.isnan(target_scores).any()):
        raise ValueError("a target's score is NaN: its rank would be meaningless")
    ranks = torch.zeros(num_users, dtype=torch.long, device=weight.device)
    for start, stop in _chunks(num_items, chunk_size):
        scores = _chunk_scores(user_states, weight, bias, start, stop)
        excluded = _excluded_in(exclusions, start, stop)
        if excluded is not None:
            scores[excluded] = float("-inf")
            rows = ((targets >= start) & (targets < stop)).nonzero(as_tuple=True)[0]
            scores[rows, targets[rows] - start] = target_scores[rows]  # a target is always ranked
        ranks += (scores >= target_scores[:, None]).sum(1)
    return ranks


__all__ = [
    "CHUNKED_RANKING_THRESHOLD",
    "DEFAULT_CHUNK_SIZE",
    "check_exclusions",
    "check_items_left",
    "chunked_target_ranks",
    "chunked_topk",
    "exclude_items",
    "items_left",
    "model_top_k",
    "ranking_chunk_size",
]
