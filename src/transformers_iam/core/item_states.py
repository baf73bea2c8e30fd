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
which changes with the history's length: they run with their true positions, live, or (with the cache, in eval mode
without autograd, where no query follows the history) remembered in the cache by their tokens and positions, so a
prompt template's prefix runs once.
Everything then enters the first layer above the run, with every token's true position id.

:func:`item_aware_forward` is that forward; the masked one (every layer over the whole prompt under item-aware
masks) is the reference it is tested against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .attention import ItemSegments
from .decoder import DecoderParts, eval_mode, run_layers
from .forward_plan import ForwardPath, ForwardPlan
from .inputs import BackboneInputs
from .item_spans import ItemSpans, Layout, distinct_sequences, find_item_spans, token_item_indices, upper_layout

if TYPE_CHECKING:  # item_cache.py imports this module
    from .item_cache import ItemStateCache


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
def encode_item_batches(
    parts: DecoderParts, token_sequences: Sequence[Sequence[int]], num_layers: int, batch_size: int = 256
) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """:func:`encode_items` over a list of item token sequences, shortest first, ``batch_size`` at a time, in eval
    mode (the layers' own states, without attention dropout, whatever mode the model is in): yields each batch's
    ``(indices, tokens, states)``, the indices into ``token_sequences``, the tokens ``-1`` padded on the right, on
    the model's device, and their ``(batch, width, hidden)`` states."""
    device = parts.backbone.get_input_embeddings().weight.device
    order = sorted(range(len(token_sequences)), key=lambda index: len(token_sequences[index]))
    with eval_mode(parts.backbone):
        for first in range(0, len(order), batch_size):
            chunk = order[first : first + batch_size]
            if any(len(token_sequences[index]) == 0 for index in chunk):
                raise ValueError(f"item sequence {next(i for i in chunk if not token_sequences[i])} has no tokens")
            width = max(len(token_sequences[index]) for index in chunk)
            tokens = torch.full((len(chunk), width), -1, dtype=torch.long)
            for row, index in enumerate(chunk):
                tokens[row, : len(token_sequences[index])] = torch.as_tensor(list(token_sequences[index]))
            tokens = tokens.to(device)
            yield chunk, tokens, encode_items(parts, tokens, num_layers)


@torch.no_grad()
def encode_item_sequences(
    parts: DecoderParts, token_sequences: Sequence[Sequence[int]], num_layers: int, batch_size: int = 256
) -> list[torch.Tensor]:
    """:func:`encode_item_batches` as one ``(tokens, hidden)`` tensor per sequence (what the cache stores)."""
    states: list[torch.Tensor | None] = [None] * len(token_sequences)
    for chunk, _, encoded in encode_item_batches(parts, token_sequences, num_layers, batch_size):
        for row, index in enumerate(chunk):
            states[index] = encoded[row, : len(token_sequences[index])]
    return states


@torch.no_grad()
def item_text_features(parts: DecoderParts, token_sequences: Sequence[Sequence[int]], num_layers: int) -> torch.Tensor:
    """``(items, 2 * hidden)``: each item's text as the model reads it where items enter the layers above the intra
    run: the mean and the last of its states after the first ``num_layers`` layers, read alone."""
    states = encode_item_sequences(parts, token_sequences, num_layers)
    return torch.stack([torch.cat([state.mean(0), state[-1]]) for state in states])


def _context_states(
    parts: DecoderParts,
    input_ids: torch.Tensor,
    keep_context: torch.Tensor,
    position_ids: torch.Tensor,
    num_layers: int,
    all_hidden_states: list | None,
    cache: ItemStateCache | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kept context tokens of each row run the leading layers, compacted, with their true positions; in an intra
    layer they form one segment (segment 0), i.e. plain causal attention among themselves.

    With ``cache`` (given where the context is the prompt before the history, the same for every user of a template:
    every-item supervision, which reads no query after it), in eval mode, without autograd or autocast (evaluation,
    ``recommend``, serving), each row's states come from the cache's memo of context runs
    (:meth:`ItemStateCache.context_states`), a missing one computed for that row alone, so that a stored state never
    depends on the batch it first came in. Otherwise (training, a cache whose ``max_contexts`` is 0) they run live,
    batched: a train-mode run may hold dropout, which must not be remembered."""
    counts = keep_context.sum(-1)
    width = max(int(counts.max()), 1)
    order = torch.argsort((~keep_context).to(torch.int8), dim=-1, stable=True)[:, :width]
    mask = torch.arange(width, device=input_ids.device)[None, :] < counts[:, None]
    tokens, positions = torch.gather(input_ids, 1, order), torch.gather(position_ids, 1, order)
    if _may_remember(parts, cache, num_layers, input_ids.device) and all_hidden_states is None:
        return _remembered_context_states(parts, tokens, positions, counts, num_layers, cache), order, mask
    return _run_context(parts, tokens, mask.long(), positions, num_layers, all_hidden_states), order, mask


def _run_context(
    parts: DecoderParts,
    tokens: torch.Tensor,
    attention_mask: torch.Tensor,
    positions: torch.Tensor,
    num_layers: int,
    all_hidden_states: list | None = None,
) -> torch.Tensor:
    """Compacted context tokens through the leading layers: one segment, plain causal attention among themselves."""
    hidden = parts.backbone.get_input_embeddings()(tokens)
    if all_hidden_states is not None:
        all_hidden_states.append(hidden)
    return run_layers(
        parts,
        hidden,
        0,
        num_layers,
        attention_mask,
        positions,
        ItemSegments.one_item_per_row(),
        all_hidden_states=all_hidden_states,
    )


def _may_remember(parts: DecoderParts, cache: ItemStateCache | None, num_layers: int, device: torch.device) -> bool:
    """Whether this forward's context runs give the states ``cache`` may keep for any later call: no autograd, no
    autocast, and no module of the cached layers in training mode (dropout, Monte-Carlo dropout included)."""
    if cache is None or not cache.max_contexts or torch.is_grad_enabled() or torch.is_autocast_enabled(device.type):
        return False
    modules = (parts.backbone.get_input_embeddings(), *parts.layers[:num_layers])
    return not any(module.training for layer in modules for module in layer.modules())


def _remembered_context_states(
    parts: DecoderParts,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    counts: torch.Tensor,
    num_layers: int,
    cache: ItemStateCache,
) -> torch.Tensor:
    """``(batch, width, hidden)``: each row's first ``counts[row]`` context states from ``cache``'s memo (zeros after
    them). A row missing from it runs alone, so its states never depend on the batch it first came in."""
    weight = parts.backbone.get_input_embeddings().weight
    states = torch.zeros(*tokens.shape, weight.shape[-1], dtype=weight.dtype, device=tokens.device)
    for row, count in enumerate(counts.tolist()):
        if not count:
            continue
        row_tokens, row_positions = tokens[row : row + 1, :count], positions[row : row + 1, :count]
        key = (str(tokens.device), weight.dtype, tuple(row_tokens[0].tolist()), tuple(row_positions[0].tolist()))

        def compute(row_tokens=row_tokens, row_positions=row_positions) -> torch.Tensor:
            return _run_context(parts, row_tokens, torch.ones_like(row_tokens), row_positions, num_layers)[0]

        states[row, :count] = cache.context_states(key, compute)
    return states


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
    plan: ForwardPlan,
    inputs: BackboneInputs,
    item_id_embeddings: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> ItemAwareOutput:
    """The backbone's forward by ``plan``: its leading intra layers computed on the plan's path (masked over the
    whole prompt, packed per distinct item, or cached with the items the cache lacks packed), then the layers above
    over the layout of :func:`upper_layout`.

    With ``item_id_embeddings`` (catalog indices to vectors), each item token's vector (the catalog index of its item
    from ``inputs.segment_item_indices``) is added to the states entering the first layer above the run. With
    ``plan.output_hidden_states``, the embeddings and every layer's output at the input's positions (zeros where the
    layers above did not see a token).
    """
    length = inputs.attention_mask.shape[1]
    masked = plan.path is ForwardPath.MASKED
    spans = find_item_spans(inputs.item_segment_ids, inputs.attention_mask, None if masked else inputs.input_ids)
    layout = upper_layout(
        spans, inputs.attention_mask, inputs.item_segment_ids, inputs.position_ids, plan.num_item_tokens,
        plan.drop_trailing_context,
    )  # fmt: skip
    if masked:
        lower_states, lower_per_layer = _masked_lower_states(parts, inputs, layout, plan)
    else:
        lower_states, lower_per_layer = _lower_item_states(parts, inputs, spans, layout, plan)
    hidden = lower_states[-1]
    if item_id_embeddings is not None:
        items = layout.gather(
            token_item_indices(inputs.item_segment_ids, inputs.attention_mask, inputs.segment_item_indices)
        )
        vectors = item_id_embeddings(items.clamp(min=0)) * (items >= 0)[..., None].to(hidden.dtype)
        hidden = hidden + vectors.to(hidden.dtype)
    upper: list | None = [] if plan.output_hidden_states else None
    hidden = run_layers(
        parts,
        hidden,
        plan.num_leading_intra,
        parts.num_layers,
        layout.attention_mask,
        layout.position_ids,
        ItemSegments(layout.item_segment_ids),
        apply_norm=True,
        all_hidden_states=upper,
    )
    hidden_states = None
    if plan.output_hidden_states:
        if plan.num_leading_intra == parts.num_layers and lower_per_layer:
            lower_per_layer[-1] = parts.backbone.norm(lower_per_layer[-1])  # the top layer's output is reported normed
        hidden_states = tuple(lower_per_layer) + tuple(layout.scatter(state, length) for state in upper)
    return ItemAwareOutput(hidden, layout, hidden_states)


def _masked_lower_states(
    parts: DecoderParts, inputs: BackboneInputs, layout: Layout, plan: ForwardPlan
) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """The leading run over the whole prompt under the item-aware mask (the reference), in ``layout``; with
    ``plan.output_hidden_states``, also every layer's states at the input's positions."""
    embeds = inputs.inputs_embeds
    hidden = embeds if embeds is not None else parts.backbone.get_input_embeddings()(inputs.input_ids)
    collected = [hidden] if plan.output_hidden_states else None
    hidden = run_layers(
        parts,
        hidden,
        0,
        plan.num_leading_intra,
        inputs.attention_mask,
        inputs.position_ids,
        ItemSegments(inputs.item_segment_ids),
        all_hidden_states=collected,
    )
    return [layout.gather(hidden)], collected


def _lower_item_states(
    parts: DecoderParts, inputs: BackboneInputs, spans: ItemSpans, layout: Layout, plan: ForwardPlan
) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """The leading run's states of the tokens the layers above see, in ``layout`` (context live, items packed or
    cached); with ``plan.output_hidden_states``, also every layer's states at the input's positions."""
    input_ids, per_layer, num_leading_intra = inputs.input_ids, plan.output_hidden_states, plan.num_leading_intra
    batch_size, length = input_ids.shape
    if layout.order is None:
        seen = layout.attention_mask.bool()
    else:
        seen = torch.zeros(batch_size, length, dtype=torch.bool, device=input_ids.device)
        seen.scatter_(1, layout.order, layout.attention_mask.bool())
    wanted_items = seen & spans.is_item
    keep_context = seen & ~spans.is_item
    context_layers: list | None = [] if per_layer else None
    # a query after the history sits at a position that moves with it: remembered, nearly every user's would miss
    shared_context_cache = plan.cache if plan.drop_trailing_context else None
    context, context_order, context_mask = _context_states(
        parts, input_ids, keep_context, inputs.position_ids, num_leading_intra, context_layers, shared_context_cache
    )
    item_layers = _item_token_states(
        parts, spans, wanted_items, num_leading_intra, plan.cache, context.dtype, [] if per_layer else None
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


__all__ = [
    "ItemAwareOutput",
    "encode_item_batches",
    "encode_item_sequences",
    "encode_items",
    "item_aware_forward",
    "item_text_features",
]
