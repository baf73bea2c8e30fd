"""Where items' intra-layer states are computed once: packed intra attention and the exact item-state cache.

In the leading run of ``intra`` layers (the bottom half of ``stacked``, the bottom third of ``hatllm``) a token sees
only its own item, and with rotary positions attention depends on relative positions only. So an item's states there
are the same wherever the item sits in a prompt (docs/architecture.md, "Compute once, supervise everywhere"):

- **packed intra attention** runs that leading run on each distinct item of a batch as a short sequence of its own
  (positions from 0, no mask: rows of one length need none), instead of on the whole prompt under a
  (sequence x sequence) mask;
- **the item-state cache** stores those states for every catalog item once, so a forward only runs the layers above.

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

import torch
from torch import nn

from .attention import ItemSegments, find_decoder_layers


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


def _weights_fingerprint(parameters: Sequence[torch.Tensor]) -> list[tuple[float, float]]:
    with torch.no_grad():
        return [(float(p.double().sum()), float(p.double().square().sum())) for p in parameters]


class ItemStateCache:
    """The states of every catalog item after the leading intra layers, keyed by the item's token ids.

    Built by [`IAMForCausalRecommendation.enable_item_cache`]; an item whose tokens are not in the cache (another
    rendering) is computed live, so a lookup is never wrong, only slower. The cache remembers the weights it was
    built from and refuses to serve once they change.
    """

    def __init__(self, token_sequences: Sequence[Sequence[int]], states: Sequence[torch.Tensor], num_layers: int):
        self.num_layers = num_layers
        self.index = {tuple(tokens): position for position, tokens in enumerate(token_sequences)}
        lengths = [len(tokens) for tokens in token_sequences]
        self.offsets = [0]
        for length in lengths:
            self.offsets.append(self.offsets[-1] + length)
        self.states = torch.cat([state.detach() for state in states])
        self._modules: list[nn.Module] = []
        self._parameters: list[torch.Tensor] = []
        self._versions: list[int] = []
        self._fingerprint: list[tuple[float, float]] = []

    def bind(self, modules: Sequence[nn.Module]) -> None:
        """Remember the weights the states were computed from (the token embeddings and the cached layers)."""
        self._modules = list(modules)
        self._parameters = self._current_parameters()
        self._versions = [p._version for p in self._parameters]  # bumped by every in-place update (optimizer, load)
        self._fingerprint = _weights_fingerprint(self._parameters)

    def _current_parameters(self) -> list[torch.Tensor]:
        return [parameter for module in self._modules for parameter in module.parameters()]

    def check_fresh(self) -> None:
        """Raise if a cached layer or the embeddings changed, gained weights or became trainable since the build."""
        parameters = self._current_parameters()
        if [id(p) for p in parameters] != [id(p) for p in self._parameters]:
            raise RuntimeError(
                "the cached layers gained or lost weights since enable_item_cache (an adapter such as LoRA was "
                "added?): the cached item states are stale; call enable_item_cache(collator) again"
            )
        trainable = [p for p in parameters if p.requires_grad]
        if trainable:
            raise RuntimeError(
                "a cached layer or the token embeddings became trainable (requires_grad) after enable_item_cache: "
                "the cache would go stale as they train; freeze them again or call disable_item_cache()"
            )
        versions = [p._version for p in parameters]
        if versions == self._versions:
            return
        # written to in place: a reload of identical weights (load_best_model_at_end) keeps the cache valid
        if _weights_fingerprint(parameters) != self._fingerprint:
            raise RuntimeError(
                "the weights of the cached layers or of the token embeddings changed since enable_item_cache: "
                "the cached item states are stale; call enable_item_cache(collator) again"
            )
        self._versions = versions

    def lookup(self, tokens: tuple[int, ...]) -> int | None:
        return self.index.get(tokens)

    def states_of(self, position: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        if self.states.device != device or self.states.dtype != dtype:
            self.states = self.states.to(device=device, dtype=dtype)
        return self.states[self.offsets[position] : self.offsets[position + 1]]

    @property
    def num_items(self) -> int:
        return len(self.index)

    @property
    def nbytes(self) -> int:
        return self.states.numel() * self.states.element_size()


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


__all__ = ["ItemStateCache", "decoder_layers", "encode_items", "forward_from_item_states", "leading_intra_layers"]
