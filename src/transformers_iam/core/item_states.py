"""Where items' states are computed apart: packed intra layers, the item-state cache and the item-level inter half.

In the leading run of ``intra`` layers (the bottom half of ``stacked``, the bottom third of ``hatllm``) a token sees
only its own item, and with rotary positions attention depends on relative positions only. So an item's states there
are the same wherever the item sits in a prompt (docs/architecture.md, "Compute once, supervise everywhere"):

- **packed intra attention** runs that leading run on each distinct item of a batch as a short sequence of its own
  (positions from 0), instead of on the whole prompt under a (sequence x sequence) mask;
- **the item-state cache** (core/item_cache.py) holds those states for every catalog item, so a forward only runs
  the layers above;
- **the item-level inter half** (``config.num_item_tokens = k``): the layers above see each history item through
  its last ``k`` states only, so they run over a few states per item instead of every token.

Context tokens (segment 0: prompt, query) are one segment whose intra states depend on their distance to each other,
which changes with the history's length: they are always computed live, with their true positions (they are few).
Everything then enters the first layer above the run, with every token's true position id (or, for the item-level
half with ``item_token_positions="renumbered"``, positions counting the kept states).

:func:`item_aware_forward` is that forward; the masked one (every layer over the whole prompt under item-aware
masks) is the reference it is tested against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .attention import ItemSegments
from .decoder import DecoderParts, eval_mode, run_layers
from .item_spans import ItemSpans, distinct_sequences, find_item_spans

if TYPE_CHECKING:  # item_cache.py imports this module
    from .item_cache import ItemStateCache


def leading_intra_layers(layer_types: Sequence[str]) -> int:
    """How many layers at the bottom of the stack are ``intra``: the ones whose item states are position-free.

    Example:
        >>> leading_intra_layers(["intra", "intra", "full", "inter"]), leading_intra_layers(["inter", "intra"])
        (2, 0)
    """
    count = 0
    for layer_type in layer_types:
        if layer_type != "intra":
            break
        count += 1
    return count


def encode_items(
    parts: DecoderParts, tokens: torch.Tensor, num_layers: int, all_hidden_states: list | None = None
) -> torch.Tensor:
    """The states after the first ``num_layers`` (intra) layers of each row of ``tokens`` (``-1`` padded on the right)
    read alone, positions from 0: ``(items, width, hidden)``; states at padding are meaningless.

    No mask is needed: in causal attention a token never sees the padding after it, so every row runs the backend's
    ``is_causal`` kernel, and an intra layer over a row that is one whole item is plain causal attention.
    """
    width = tokens.shape[1]
    input_ids = tokens.clamp(min=0)
    hidden = parts.backbone.get_input_embeddings()(input_ids)
    if all_hidden_states is not None:
        all_hidden_states.append(hidden)
    positions = torch.arange(width, device=tokens.device).expand(tokens.shape[0], -1)
    return run_layers(
        parts,
        hidden,
        0,
        num_layers,
        None,
        positions,
        ItemSegments.one_item_per_row(),
        all_hidden_states=all_hidden_states,
    )


@torch.no_grad()
def encode_item_sequences(
    parts: DecoderParts, token_sequences: Sequence[Sequence[int]], num_layers: int, batch_size: int = 256
) -> list[torch.Tensor]:
    """:func:`encode_items` over a list of item token sequences, in batches of similar length; one
    ``(tokens, hidden)`` tensor per sequence (what the cache stores). Always in eval mode: the stored states are the
    layers' own, without attention dropout, whatever mode the model is in."""
    device = parts.backbone.get_input_embeddings().weight.device
    order = sorted(range(len(token_sequences)), key=lambda index: len(token_sequences[index]))
    states: list[torch.Tensor | None] = [None] * len(token_sequences)
    with eval_mode(parts.backbone):
        for first in range(0, len(order), batch_size):
            chunk = order[first : first + batch_size]
            if any(len(token_sequences[index]) == 0 for index in chunk):
                raise ValueError(f"item sequence {next(i for i in chunk if not token_sequences[i])} has no tokens")
            width = max(len(token_sequences[index]) for index in chunk)
            tokens = torch.full((len(chunk), width), -1, dtype=torch.long)
            for row, index in enumerate(chunk):
                tokens[row, : len(token_sequences[index])] = torch.as_tensor(list(token_sequences[index]))
            encoded = encode_items(parts, tokens.to(device), num_layers)
            for row, index in enumerate(chunk):
                states[index] = encoded[row, : len(token_sequences[index])]
    return states


@torch.no_grad()
def item_text_features(parts: DecoderParts, token_sequences: Sequence[Sequence[int]], num_layers: int) -> torch.Tensor:
    """``(items, 2 * hidden)``: each item's text as the model reads it where items enter the layers above the intra
    run: the mean and the last of its states after the first ``num_layers`` layers, read alone."""
    states = encode_item_sequences(parts, token_sequences, num_layers)
    return torch.stack([torch.cat([state.mean(0), state[-1]]) for state in states])


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
    renumber_positions: bool,
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
    if renumber_positions:
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    return Layout(order, mask.long(), torch.gather(segments, 1, order) * mask.long(), positions * mask.long())


def _context_states(
    parts: DecoderParts,
    input_ids: torch.Tensor,
    keep_context: torch.Tensor,
    position_ids: torch.Tensor,
    num_layers: int,
    all_hidden_states: list | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kept context tokens of each row run the leading layers live, compacted, with their true positions; in an
    intra layer they form one segment (segment 0), i.e. plain causal attention among themselves."""
    counts = keep_context.sum(-1)
    width = max(int(counts.max()), 1)
    order = torch.argsort((~keep_context).to(torch.int8), dim=-1, stable=True)[:, :width]
    mask = torch.arange(width, device=input_ids.device)[None, :] < counts[:, None]
    hidden = parts.backbone.get_input_embeddings()(torch.gather(input_ids, 1, order))
    if all_hidden_states is not None:
        all_hidden_states.append(hidden)
    states = run_layers(
        parts,
        hidden,
        0,
        num_layers,
        mask.long(),
        torch.gather(position_ids, 1, order),
        ItemSegments.one_item_per_row(),
        all_hidden_states=all_hidden_states,
    )
    return states, order, mask


def _item_token_states(
    parts: DecoderParts,
    spans: ItemSpans,
    wanted: torch.Tensor,
    num_layers: int,
    cache: ItemStateCache | None,
    dtype: torch.dtype,
    all_hidden_states: list | None,
) -> list[torch.Tensor]:
    """The leading run's states of the item tokens marked ``wanted`` (row-major order): from the cache where it holds
    the item, else from a packed run over the batch's distinct items. One tensor per layer output when
    ``all_hidden_states`` is asked for (embeddings first), else only the last."""
    rows, columns = wanted.nonzero(as_tuple=True)
    span = spans.token_span[rows, columns]
    offset = spans.token_offset[rows, columns]
    device = spans.row.device
    hit = torch.zeros(spans.num_spans, dtype=torch.bool, device=device)
    from_cache = None
    if cache is not None and all_hidden_states is None:
        entries = cache.lookup(spans.tokens)
        hit = entries >= 0
        token_hit = hit[span]
        from_cache = cache.states_at(
            entries[span[token_hit]], offset[token_hit], spans.length[span[token_hit]], device, dtype
        )
    missing = (~hit).nonzero(as_tuple=True)[0]
    layers_out: list[torch.Tensor] = []
    token_missing = ~hit[span]
    if missing.numel():
        first, inverse = distinct_sequences(spans.tokens[missing])
        distinct_of_span = torch.full((spans.num_spans,), -1, dtype=torch.long, device=device)
        distinct_of_span[missing] = inverse
        per_layer = [] if all_hidden_states is not None else None
        last = encode_items(parts, spans.tokens[missing[first]], num_layers, per_layer)
        tables = per_layer if per_layer is not None else [last]
        pick = (distinct_of_span[span[token_missing]], offset[token_missing])
        layers_out = [table[pick] for table in tables]
    if from_cache is None:
        return layers_out
    combined = from_cache.new_empty(span.shape[0], from_cache.shape[-1])
    combined[~token_missing] = from_cache
    if layers_out:
        combined[token_missing] = layers_out[-1].to(combined.dtype)
    return [combined]


@dataclass
class ItemAwareOutput:
    """The backbone's output in the layout its last layers ran in (``layout``: which input tokens they saw)."""

    last_hidden_state: torch.Tensor
    layout: Layout
    hidden_states: tuple[torch.Tensor, ...] | None = None


def item_aware_forward(
    parts: DecoderParts,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    item_segment_ids: torch.Tensor,
    num_leading_intra: int,
    lower: str = "masked",
    cache: ItemStateCache | None = None,
    num_item_tokens: int | None = None,
    renumber_positions: bool = False,
    drop_trailing_context: bool = False,
    token_items: torch.Tensor | None = None,
    item_id_embeddings: Callable[[torch.Tensor], torch.Tensor] | None = None,
    output_hidden_states: bool = False,
) -> ItemAwareOutput:
    """The backbone's forward with its leading ``num_leading_intra`` intra layers computed ``lower``: ``"masked"``
    (over the whole prompt under the item-aware mask), ``"packed"`` (per distinct item) or ``"cached"`` (from
    ``cache``, items it lacks packed), then the layers above over the layout of :func:`upper_layout`.

    With ``item_id_embeddings`` (catalog indices to vectors), each item token's vector (``token_items``: the catalog
    index of the item each token belongs to, ``-1`` on context) is added to the states entering the first layer
    above the run. With ``output_hidden_states``, the embeddings and every layer's output at the input's positions
    (zeros where the layers above did not see a token).
    """
    batch_size, length = attention_mask.shape
    spans = find_item_spans(item_segment_ids, attention_mask, input_ids if lower != "masked" else None)
    layout = upper_layout(
        spans,
        attention_mask,
        item_segment_ids,
        position_ids,
        num_item_tokens,
        renumber_positions,
        drop_trailing_context,
    )
    if lower == "masked":
        lower_states, lower_per_layer = _masked_lower_states(
            parts, input_ids, inputs_embeds, attention_mask, position_ids, item_segment_ids, layout,
            num_leading_intra, output_hidden_states,
        )  # fmt: skip
    else:
        lower_states, lower_per_layer = _lower_item_states(
            parts, input_ids, spans, layout, position_ids, num_leading_intra, cache, output_hidden_states
        )
    hidden = lower_states[-1]
    if item_id_embeddings is not None:
        items = layout.gather(token_items)
        vectors = item_id_embeddings(items.clamp(min=0)) * (items >= 0)[..., None].to(hidden.dtype)
        hidden = hidden + vectors.to(hidden.dtype)
    upper: list | None = [] if output_hidden_states else None
    hidden = run_layers(
        parts,
        hidden,
        num_leading_intra,
        parts.num_layers,
        layout.attention_mask,
        layout.position_ids,
        ItemSegments(layout.item_segment_ids),
        apply_norm=True,
        all_hidden_states=upper,
    )
    hidden_states = None
    if output_hidden_states:
        if num_leading_intra == parts.num_layers and lower_per_layer:
            lower_per_layer[-1] = parts.backbone.norm(lower_per_layer[-1])  # the top layer's output is reported normed
        hidden_states = tuple(lower_per_layer) + tuple(layout.scatter(state, length) for state in upper)
    return ItemAwareOutput(hidden, layout, hidden_states)


def _masked_lower_states(
    parts: DecoderParts,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    item_segment_ids: torch.Tensor,
    layout: Layout,
    num_leading_intra: int,
    per_layer: bool,
) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """The leading run over the whole prompt under the item-aware mask (the reference), in ``layout``; with
    ``per_layer``, also every layer's states at the input's positions."""
    hidden = inputs_embeds if inputs_embeds is not None else parts.backbone.get_input_embeddings()(input_ids)
    collected = [hidden] if per_layer else None
    hidden = run_layers(
        parts,
        hidden,
        0,
        num_leading_intra,
        attention_mask,
        position_ids,
        ItemSegments(item_segment_ids),
        all_hidden_states=collected,
    )
    return [layout.gather(hidden)], collected


def _lower_item_states(
    parts: DecoderParts,
    input_ids: torch.Tensor,
    spans: ItemSpans,
    layout: Layout,
    position_ids: torch.Tensor,
    num_leading_intra: int,
    cache: ItemStateCache | None,
    per_layer: bool,
) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """The leading run's states of the tokens the layers above see, in ``layout`` (context live, items packed or
    cached); with ``per_layer``, also every layer's states at the input's positions (for ``output_hidden_states``)."""
    batch_size, length = input_ids.shape
    if layout.order is None:
        seen = layout.attention_mask.bool()
    else:
        seen = torch.zeros(batch_size, length, dtype=torch.bool, device=input_ids.device)
        seen.scatter_(1, layout.order, layout.attention_mask.bool())
    wanted_items = seen & spans.is_item
    keep_context = seen & ~spans.is_item
    context_layers: list | None = [] if per_layer else None
    context, context_order, context_mask = _context_states(
        parts, input_ids, keep_context, position_ids, num_leading_intra, context_layers
    )
    item_layers = _item_token_states(
        parts, spans, wanted_items, num_leading_intra, cache, context.dtype, [] if per_layer else None
    )
    rows, columns = wanted_items.nonzero(as_tuple=True)
    context_rows = torch.arange(batch_size, device=input_ids.device)[:, None].expand_as(context_order)
    context_rows, context_columns = context_rows[context_mask], context_order[context_mask]
    if not per_layer:  # straight into the layout: where each input position sits in it
        width = layout.attention_mask.shape[1]
        place = torch.arange(length, device=input_ids.device).expand(batch_size, -1)
        if layout.order is not None:
            place = torch.zeros_like(place).scatter(
                1, layout.order, torch.arange(width, device=place.device).expand_as(layout.order)
            )
        hidden = context.new_zeros(batch_size, width, context.shape[-1])
        hidden[context_rows, place[context_rows, context_columns]] = context[context_mask]
        if item_layers:
            hidden[rows, place[rows, columns]] = item_layers[-1].to(hidden.dtype)
        return [hidden], None
    outputs = []
    for context_state, item_state in zip(context_layers, item_layers or [None] * len(context_layers)):
        full = context_state.new_zeros(batch_size, length, context_state.shape[-1])
        full[context_rows, context_columns] = context_state[context_mask]
        if item_state is not None:
            full[rows, columns] = item_state.to(full.dtype)
        outputs.append(full)
    return [layout.gather(outputs[-1])], outputs


def num_item_tokens_error(layer_types: Sequence[str]) -> str | None:
    """Why the item-level inter half cannot run on these layer kinds (no leading intra run), or None."""
    if leading_intra_layers(layer_types) == 0:
        return (
            f"num_item_tokens needs a leading run of intra layers (the layers above read each item's last states, "
            f"which are the item's own only after intra layers); the layers are {list(layer_types)}"
        )
    return None


__all__ = [
    "ItemAwareOutput",
    "Layout",
    "encode_item_sequences",
    "encode_items",
    "item_aware_forward",
    "item_text_features",
    "leading_intra_layers",
    "num_item_tokens_error",
    "upper_layout",
]
