"""Where item segment ids become a table of item spans, with tensor operations on the model's device.

Every forward that computes items apart (packed intra layers, the item-state cache, the item-level inter half) needs
to know, for each token, which item span it belongs to and where in it it sits; and, for each span, its tokens, so
that equal items are computed once and cached items are found. Nothing here loops over tokens in Python: spans come
from where the segment id changes, token tables from one scatter, and an item's identity from a hash of its tokens
(checked token by token, so a hash collision can never serve another item's states).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Two polynomial hashes modulo primes below 2**31: (token + 1) * base**offset stays below 2**49 for any vocabulary
# under 2**18 tokens, a sum over 2**9 offsets below 2**58, so int64 never overflows.
_HASHES = ((1_000_003, 2_147_483_647), (911_382_323, 2_147_483_629))
_MAX_VOCAB = 2**18


@dataclass
class ItemSpans:
    """The item spans of a batch (segments ``1..n`` on real tokens), in row-major order.

    ``token_span[b, p]`` is the index of the span holding token ``p`` of row ``b`` (``-1`` for context and
    padding), ``token_offset[b, p]`` its place in that span; per span: its ``row``, ``segment``, first position
    ``start`` and ``length``; ``tokens`` (when input ids were given) its token ids, ``-1`` padded.
    """

    token_span: torch.Tensor
    token_offset: torch.Tensor
    row: torch.Tensor
    segment: torch.Tensor
    start: torch.Tensor
    length: torch.Tensor
    tokens: torch.Tensor | None = None

    @property
    def num_spans(self) -> int:
        return self.row.shape[0]

    @property
    def is_item(self) -> torch.Tensor:
        return self.token_span >= 0


def find_item_spans(
    item_segment_ids: torch.Tensor, attention_mask: torch.Tensor, input_ids: torch.Tensor | None = None
) -> ItemSpans:
    """The spans of a batch. An item must be one contiguous span: :func:`noncontiguous_segments` says which is not.

    Example:
        >>> spans = find_item_spans(torch.tensor([[0, 1, 1, 2, 0]]), torch.ones(1, 5, dtype=torch.long))
        >>> spans.token_span.tolist(), spans.start.tolist(), spans.length.tolist()
        ([[-1, 0, 0, 1, -1]], [1, 3], [2, 1])
    """
    segments = item_segment_ids.long() * attention_mask.long()
    batch_size, length = segments.shape
    is_item = segments > 0
    previous = torch.nn.functional.pad(segments[:, :-1], (1, 0))
    starts = is_item & (segments != previous)
    # a token belongs to the latest span start at or before it (in row-major order): spans never cross rows
    latest_start = starts.flatten().long().cumsum(0).view(batch_size, length) - 1
    token_span = torch.where(is_item, latest_start, torch.full_like(latest_start, -1))
    row, start = starts.nonzero(as_tuple=True)
    num_spans = row.shape[0]
    span_length = torch.zeros(num_spans, dtype=torch.long, device=segments.device)
    span_length.scatter_add_(0, token_span[is_item], torch.ones_like(token_span[is_item]))
    positions = torch.arange(length, device=segments.device).expand(batch_size, -1)
    token_offset = torch.where(is_item, positions - start[token_span.clamp(min=0)], torch.zeros_like(positions))
    tokens = None
    if input_ids is not None:
        width = int(span_length.max()) if num_spans else 0
        tokens = torch.full((num_spans, width), -1, dtype=torch.long, device=segments.device)
        tokens[token_span[is_item], token_offset[is_item]] = input_ids[is_item].long()
    return ItemSpans(token_span, token_offset, row, segments[row, start], start, span_length, tokens)


def noncontiguous_segments(spans: ItemSpans, item_segment_ids: torch.Tensor) -> torch.Tensor:
    """A boolean per span: its (row, segment) also has another span (the item is split in two or more pieces)."""
    if spans.num_spans == 0:
        return torch.zeros(0, dtype=torch.bool, device=item_segment_ids.device)
    stride = int(item_segment_ids.max()) + 1
    keys = spans.row * stride + spans.segment
    counts = torch.bincount(keys, minlength=item_segment_ids.shape[0] * stride)
    return counts[keys] > 1


def token_sequence_keys(tokens: torch.Tensor) -> torch.Tensor:
    """An int64 hash of each row of ``tokens`` (``-1`` padded): equal sequences get equal keys.

    Example:
        >>> keys = token_sequence_keys(torch.tensor([[5, 6, -1], [5, 6, -1], [6, 5, -1], [5, 6, 7]]))
        >>> keys[0] == keys[1], keys[0] == keys[2], keys[0] == keys[3]
        (tensor(True), tensor(False), tensor(False))
    """
    if tokens.numel() and int(tokens.max()) >= _MAX_VOCAB:
        raise ValueError(f"token ids must be below {_MAX_VOCAB} to be hashed exactly, got {int(tokens.max())}")
    shifted = (tokens + 1).clamp(min=0)  # padding (-1) adds nothing; every real token adds at least one
    parts = []
    for base, modulus in _HASHES:
        powers = torch.tensor(
            [pow(base, offset, modulus) for offset in range(tokens.shape[1])], dtype=torch.long, device=tokens.device
        )
        parts.append(((shifted * powers) % modulus).sum(-1) % modulus)
    return parts[0] * 2**31 + parts[1]


def distinct_sequences(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(representatives, inverse)``: one row index per distinct row of ``tokens`` and, per row, its distinct one.

    Rows are grouped by hash, then checked token by token: a collision splits the group instead of merging two
    different sequences.
    """
    if tokens.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.long, device=tokens.device)
        return empty, empty
    keys = token_sequence_keys(tokens)
    for _ in range(2):
        _, inverse = torch.unique(keys, return_inverse=True)
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        first = torch.full((int(inverse.max()) + 1,), tokens.shape[0], dtype=torch.long, device=tokens.device)
        first = first.scatter_reduce(0, inverse, rows, reduce="amin")
        same = (tokens == tokens[first[inverse]]).all(-1)
        if bool(same.all()):
            return first, inverse
        keys = torch.where(same, keys, -1 - rows)  # a collision: those rows become their own groups
    raise AssertionError("unreachable: rows given their own keys are their own representatives")


@dataclass
class Layout:
    """Which tokens the layers above the leading intra run see, and in what order (``order[b, j]``: the position in
    the input of the ``j``-th token they see in row ``b``); ``None`` where they see every token."""

    order: torch.Tensor | None
    attention_mask: torch.Tensor
    item_segment_ids: torch.Tensor
    position_ids: torch.Tensor

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` (batch, length, ...) in this layout."""
        if self.order is None:
            return values
        index = self.order.view(*self.order.shape, *([1] * (values.dim() - 2))).expand(-1, -1, *values.shape[2:])
        return torch.gather(values, 1, index)

    def scatter(self, values: torch.Tensor, length: int) -> torch.Tensor:
        """``values`` of this layout back at their input positions, zeros where a token was not seen."""
        if self.order is None:
            return values
        out = values.new_zeros(values.shape[0], length, *values.shape[2:])
        index = self.order.view(*self.order.shape, 1).expand_as(values)
        return out.scatter(1, index, values * self.attention_mask[..., None].to(values.dtype))


def upper_layout(
    spans: ItemSpans,
    attention_mask: torch.Tensor,
    item_segment_ids: torch.Tensor,
    position_ids: torch.Tensor,
    num_item_tokens: int | None,
    drop_trailing_context: bool,
) -> Layout:
    """The layout of the layers above: every token, or the context and each item's last ``num_item_tokens`` states
    (kept in input order), without the context after the last item when nothing reads it."""
    real = attention_mask.bool()
    segments = item_segment_ids.long() * real.long()
    if num_item_tokens is None and not drop_trailing_context:
        return Layout(None, attention_mask, segments, position_ids)
    is_item = spans.is_item
    keep = real.clone()
    if num_item_tokens is not None:
        span_length = spans.length[spans.token_span.clamp(min=0)]
        keep &= ~is_item | (spans.token_offset >= span_length - num_item_tokens)
    if drop_trailing_context:
        positions = torch.arange(segments.shape[1], device=segments.device).expand_as(segments)
        last_item = torch.where(is_item, positions, torch.full_like(positions, -1)).max(-1, keepdim=True).values
        keep &= is_item | (positions < last_item)
    counts = keep.sum(-1)
    width = max(int(counts.max()), 1)
    order = torch.argsort((~keep).to(torch.int8), dim=-1, stable=True)[:, :width]
    mask = torch.arange(width, device=segments.device)[None, :] < counts[:, None]
    positions = torch.gather(position_ids, 1, order)
    return Layout(order, mask.long(), torch.gather(segments, 1, order) * mask.long(), positions * mask.long())


def token_item_indices(
    item_segment_ids: torch.Tensor, attention_mask: torch.Tensor, segment_item_indices: torch.Tensor
) -> torch.Tensor:
    """The catalog index of the item each token belongs to (``-1`` on context and padding), from the catalog index of
    each item segment (``segment_item_indices``: ``(batch, items)``, ``-1`` padded).

    Example:
        >>> token_item_indices(torch.tensor([[0, 1, 1, 2, 0]]), torch.ones(1, 5), torch.tensor([[7, 3]])).tolist()
        [[-1, 7, 7, 3, -1]]
    """
    segments = item_segment_ids.long() * attention_mask.long()
    columns = (segments - 1).clamp(0, max(segment_item_indices.shape[1] - 1, 0))
    items = segment_item_indices.to(segments.device).long().gather(1, columns)
    return torch.where(segments > 0, items, torch.full_like(items, -1))


__all__ = [
    "ItemSpans",
    "Layout",
    "distinct_sequences",
    "find_item_spans",
    "noncontiguous_segments",
    "token_item_indices",
    "token_sequence_keys",
    "upper_layout",
]
