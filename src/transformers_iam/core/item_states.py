"""Where items' intra-layer states are computed once: packed intra attention and the exact item-state cache.

In the leading run of ``intra`` layers (the bottom half of ``stacked``, the bottom third of ``hatllm``) a token sees
only its own item, and with rotary positions attention depends on relative positions only. So an item's states there
are the same wherever the item sits in a prompt (docs/architecture.md, "Compute once, supervise everywhere"):

- **packed intra attention** runs that leading run on each distinct item of a batch as a short sequence of its own
  (positions from 0, no mask: rows of one length need none), instead of on the whole prompt under a
  (sequence x sequence) mask;
- **the item-state cache** (core/item_cache.py) stores those states for every catalog item once, so a forward only
  runs the layers above.

Context tokens (segment 0: prompt, query) are one segment whose intra states depend on their distance to each other,
which changes with the history's length: they are always computed live, with their true positions (they are few).
The states then enter the first layer above the run as ``inputs_embeds``, with every token's true position id.

Example:
    >>> model.enable_item_cache(collator)  # doctest: +SKIP
    >>> model(**collator(examples)).logits  # the cached layers no longer run for item tokens  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from .attention import ItemSegments, find_decoder_layers

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


class _KnownOutput(nn.Module):
    """Stands in for a decoder layer whose output is already known (it arrives as ``inputs_embeds``)."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states


@contextlib.contextmanager
def decoder_layers(backbone: nn.Module, start: int, stop: int) -> Iterator[None]:
    """Within the block, ``backbone`` runs only its layers ``[start, stop)``.

    Layers below ``start`` pass their input through (their output is what the caller feeds in as ``inputs_embeds``);
    layers from ``stop`` on are cut, and so is the final norm unless ``stop`` is the top. Layer indices are kept, so a
    decoder that looks up per-layer settings by index (Qwen2's sliding-window layers) still finds the right ones.
    """
    layers = backbone.layers
    if not 0 <= start < stop <= len(layers):
        raise ValueError(f"cannot run layers [{start}, {stop}) of a backbone with {len(layers)} layers")
    norm = getattr(backbone, "norm", None)
    if stop < len(layers) and norm is None:
        raise ValueError(f"{type(backbone).__name__} has no `norm` to skip when running its bottom layers alone")
    backbone.layers = nn.ModuleList([_KnownOutput() if index < start else layers[index] for index in range(stop)])
    if stop < len(layers):
        backbone.norm = nn.Identity()
    try:
        yield
    finally:
        backbone.layers = layers
        if norm is not None:
            backbone.norm = norm


@dataclass
class ItemSpan:
    """One item's tokens in a batch: row, first position and token ids."""

    row: int
    start: int
    tokens: tuple[int, ...]


def item_spans(input_ids: torch.Tensor, item_segment_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[ItemSpan]:
    """Every item's contiguous span of tokens in a batch (segments 1..n on real tokens)."""
    spans = []
    ids, segments, real = input_ids.tolist(), item_segment_ids.tolist(), attention_mask.bool().tolist()
    for row, (row_ids, row_segments, row_real) in enumerate(zip(ids, segments, real)):
        seen, start = set(), None
        for position in range(len(row_ids) + 1):
            segment = row_segments[position] if position < len(row_ids) and row_real[position] else 0
            if start is not None and segment != row_segments[start]:
                spans.append(ItemSpan(row, start, tuple(row_ids[start:position])))
                start = None
            if segment and start is None:
                if segment in seen:
                    raise ValueError(
                        f"row {row}: item segment {segment} is not contiguous (it restarts at position {position}); "
                        "every item must be one span of tokens"
                    )
                seen.add(segment)
                start = position
    return spans


def encode_items(
    backbone: nn.Module, token_sequences: Sequence[Sequence[int]], num_layers: int, batch_size: int = 256
) -> list[torch.Tensor]:
    """The states after the first ``num_layers`` (intra) layers of each item read alone, positions from 0.

    Sequences of one length run together, so no row has padding and no mask is needed: the intra layers see a batch
    of whole items (``ItemSegments.one_item_per_row``) and the backend can use its ``is_causal`` kernel.
    """
    device = backbone.get_input_embeddings().weight.device
    states: list[torch.Tensor | None] = [None] * len(token_sequences)
    by_length: dict[int, list[int]] = {}
    for index, tokens in enumerate(token_sequences):
        if len(tokens) == 0:
            raise ValueError(f"item sequence {index} has no tokens")
        by_length.setdefault(len(tokens), []).append(index)
    with decoder_layers(backbone, 0, num_layers):
        for length, indices in sorted(by_length.items()):
            for first in range(0, len(indices), batch_size):
                chunk = indices[first : first + batch_size]
                input_ids = torch.tensor([list(token_sequences[i]) for i in chunk], device=device)
                outputs = backbone(
                    input_ids=input_ids,
                    position_ids=torch.arange(length, device=device).expand(len(chunk), -1),
                    item_segments=ItemSegments.one_item_per_row(),
                    use_cache=False,
                )
                for row, index in enumerate(chunk):
                    states[index] = outputs.last_hidden_state[row]
    return states


def forward_from_item_states(
    model_backbone: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    item_segment_ids: torch.Tensor,
    num_layers: int,
    cache: ItemStateCache | None = None,
    **backbone_kwargs,
):
    """The backbone's forward with its leading ``num_layers`` intra layers computed per item (packed or cached).

    Item tokens get their states from ``cache`` (or, absent there, from a packed run of the distinct items of the
    batch); context tokens run the bottom layers live on their own, with their true positions; everything then runs
    the layers above as ``inputs_embeds``. Gives the same outputs as the masked forward (to float rounding).
    """
    backbone = model_backbone
    _, layers = find_decoder_layers(backbone)
    batch_size, length = input_ids.shape
    spans = item_spans(input_ids, item_segment_ids, attention_mask)

    distinct: dict[tuple[int, ...], int] = {}
    for span in spans:
        distinct.setdefault(span.tokens, len(distinct))
    known: dict[tuple[int, ...], torch.Tensor] = {}
    embeddings = backbone.get_input_embeddings().weight
    if cache is not None:
        for tokens in distinct:
            position = cache.lookup(tokens)
            if position is not None:
                known[tokens] = cache.states_of(position, embeddings.device, embeddings.dtype)
    missing = [tokens for tokens in distinct if tokens not in known]
    if missing:
        known.update(zip(missing, encode_items(backbone, missing, num_layers)))

    # context tokens (segment 0) of each row, compacted, with their true positions
    is_context = (item_segment_ids == 0) & attention_mask.bool()
    context_counts = is_context.sum(-1)
    context_width = int(context_counts.max())
    order = torch.argsort((~is_context).to(torch.int8), dim=-1, stable=True)[:, :context_width]
    context_mask = torch.arange(context_width, device=input_ids.device)[None, :] < context_counts[:, None]
    with decoder_layers(backbone, 0, num_layers):
        context_states = backbone(
            input_ids=torch.gather(input_ids, 1, order),
            attention_mask=context_mask.long(),
            position_ids=torch.gather(position_ids, 1, order),
            item_segment_ids=torch.zeros_like(order),
            use_cache=False,
        ).last_hidden_state

    hidden_size = context_states.shape[-1]
    flat = context_states.new_zeros(batch_size * length, hidden_size)
    rows = torch.arange(batch_size, device=input_ids.device)[:, None].expand_as(order)
    context_targets = (rows * length + order)[context_mask]
    flat = flat.index_copy(0, context_targets, context_states[context_mask])
    if spans:
        targets = torch.cat(
            [torch.arange(len(span.tokens), device=input_ids.device) + span.row * length + span.start for span in spans]
        )
        values = torch.cat([known[span.tokens].to(flat.dtype) for span in spans])
        flat = flat.index_copy(0, targets, values)
    with decoder_layers(backbone, num_layers, len(layers)):
        return backbone(
            inputs_embeds=flat.view(batch_size, length, hidden_size),
            attention_mask=attention_mask,
            position_ids=position_ids,
            item_segment_ids=item_segment_ids,
            use_cache=False,
            **backbone_kwargs,
        )


__all__ = ["decoder_layers", "encode_items", "forward_from_item_states", "item_spans", "leading_intra_layers"]
