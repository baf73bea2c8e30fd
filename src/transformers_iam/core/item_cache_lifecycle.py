"""The item-state cache's lifecycle on a model: when it can be exact, building it (and checking it reproduces the
masked forward), attaching it, and rebuilding or dropping it when the model changes under it.

Why it is exact, and when it is refused: docs/architecture.md, "Compute once, supervise everywhere"; the cache
itself (what it stores and how it checks it is still current) is ``item_cache.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers.utils import logging

from .attention import current_attn_implementation
from .catalog import item_token_sequences
from .decoder import decoder_parts, eval_mode
from .forward_plan import ForwardPath
from .item_cache import ItemStateCache
from .item_states import encode_item_sequences

logger = logging.get_logger(__name__)


class ItemCacheMixin:
    """The item-state cache of an [`IAMForCausalRecommendation`]: ``enable_item_cache``, ``disable_item_cache``, and
    its refresh when the attention implementation or the layer kinds change."""

    item_cache: ItemStateCache | None

    def enable_item_cache(self, renderer, batch_size: int = 256) -> ItemStateCache:
        """Compute every catalog item's states after the leading intra layers once, and use them in every forward.

        ``renderer``: what renders the catalog's items as tokens (an [`IAMDataCollator`], or any object with a
        ``catalog`` and ``item_token_ids(catalog_index)``); or the token sequences themselves, in catalog order.

        Exact (to float rounding) because in those layers an item sees only itself and rotary positions are
        relative: the forward, `recommend`, evaluation inside the `Trainer` and the pipeline then run only the layers
        above for item tokens. Refused, with the reason, when it could not be exact: no leading intra run, positions
        that are not rotary, or trainable cached layers or token embeddings (freeze them first). The cache checks at
        each forward that it still describes the model (docs/architecture.md, "Compute once").

        Example:
            >>> _ = model.model.requires_grad_(False)
            >>> cache = model.enable_item_cache(collator)
            >>> cache.num_items == len(model.catalog)
            True
        """
        sequences = item_token_sequences(renderer, self.catalog)
        self.item_cache = build_item_cache(self, sequences, batch_size)
        return self.item_cache

    def disable_item_cache(self) -> None:
        """Drop the item-state cache (the leading intra layers run again in every forward)."""
        self.item_cache = None

    def _refresh_item_cache(self, reason: str) -> None:
        cache = getattr(self, "item_cache", None)
        if cache is None:
            return
        refusal = cache_refusal(self)
        if refusal is not None:
            self.item_cache = None
            logger.warning(f"item-state cache dropped ({reason}): {refusal}")
            return
        self.item_cache = build_item_cache(self, cache.token_sequences)
        logger.warning(f"item-state cache rebuilt ({reason}): {self.item_cache.num_items} items")


def cached_modules(model) -> tuple[list[nn.Module], list[torch.Tensor]]:
    """What the states of the leading intra run are computed from: the token embeddings and those layers (modules),
    and the rotary embedding's buffers (its frequencies)."""
    parts = decoder_parts(model.model)
    modules = [parts.backbone.get_input_embeddings(), *parts.layers[: model.num_leading_intra_layers]]
    return modules, list(parts.backbone.rotary_emb.buffers())


def cache_refusal(model) -> str | None:
    """Why ``model`` (an ``IAMForCausalRecommendation``) cannot have an exact item-state cache now, or None."""
    num_layers = model.num_leading_intra_layers
    if num_layers == 0:
        return (
            f"no leading intra run to cache: the layers are {model.config.resolved_layer_types}; the item-state cache "
            "needs the bottom layer(s) to be intra"
        )
    if getattr(model.model, "rotary_emb", None) is None:
        return (
            f"{type(model.model).__name__} has no rotary position embedding: with absolute positions an item's "
            "states depend on where it sits, so they cannot be cached"
        )
    parts = decoder_parts(model.model)
    named = list(parts.backbone.get_input_embeddings().named_parameters(prefix="embeddings"))
    for index in range(num_layers):
        named += list(parts.layers[index].named_parameters(prefix=f"layers.{index}"))
    trainable = [name for name, parameter in named if parameter.requires_grad]
    if trainable:
        return (
            f"cached weights are trainable ({', '.join(trainable[:3])}{', ...' if len(trainable) > 3 else ''}): "
            f"freeze the token embeddings and the first {num_layers} layers (requires_grad_(False)) so the cached "
            "states cannot go stale"
        )
    return None


def build_item_cache(model, token_sequences: Sequence[Sequence[int]], batch_size: int = 256) -> ItemStateCache:
    """The cache of ``model`` (an ``IAMForCausalRecommendation``) for these item token sequences (a catalog's
    rendering, in catalog order). Refuses, with the reason, when it could not be exact, and checks on a probe batch
    that the cached forward gives the masked forward's states."""
    refusal = cache_refusal(model)
    if refusal is not None:
        raise ValueError(refusal)
    num_layers = model.num_leading_intra_layers
    with torch.no_grad():
        states = encode_item_sequences(decoder_parts(model.model), token_sequences, num_layers, batch_size)
    cache = ItemStateCache(token_sequences, states, num_layers, model.config.num_item_tokens)
    modules, buffers = cached_modules(model)
    cache.bind(modules, buffers, current_attn_implementation(model.config))
    check_cache_exact(model, cache)
    return cache


def _probe_batch(token_sequences: Sequence[Sequence[int]], device) -> dict[str, torch.Tensor]:
    """Two histories of cached items behind one context token (the first item's first token), right padded."""
    context = [token_sequences[0][0]]
    rows = [list(range(min(3, len(token_sequences)))), list(range(len(token_sequences)))[-2:]]
    input_ids, segments = [], []
    for items in rows:
        ids, segs = list(context), [0]
        for segment, index in enumerate(items, start=1):
            ids += list(token_sequences[index])
            segs += [segment] * len(token_sequences[index])
        input_ids.append(ids)
        segments.append(segs)
    width = max(len(ids) for ids in input_ids)
    pad = lambda rows, value: torch.tensor([row + [value] * (width - len(row)) for row in rows], device=device)  # noqa: E731
    mask = pad([[1] * len(ids) for ids in input_ids], 0)
    # any catalog index will do for item id embeddings: both forwards add the same vectors
    indices = torch.zeros(len(rows), max(len(items) for items in rows), dtype=torch.long, device=device)
    return {
        "input_ids": pad(input_ids, 0),
        "item_segment_ids": pad(segments, 0),
        "attention_mask": mask,
        "segment_item_indices": indices,
    }


@torch.no_grad()
def check_cache_exact(model, cache: ItemStateCache) -> None:
    """Refuse a backbone for which feeding cached states to the layers above is not the same forward (one that
    scales its embeddings inside its forward, say): compare the cached and the masked forwards on a probe batch, in
    eval mode (the cache holds the layers' dropout-free states; attention dropout would make two forwards differ)."""
    probe = _probe_batch(cache.token_sequences, model.get_input_embeddings().weight.device)
    with eval_mode(model):
        cached = model.backbone_forward(**probe, path=ForwardPath.CACHED, cache=cache)
        masked = model.backbone_forward(**probe, path=ForwardPath.MASKED)
    real = cached.attention_mask.bool()
    difference = float((cached.last_hidden_state - masked.last_hidden_state)[real].abs().max())
    tolerance = 1e-3 if cached.last_hidden_state.dtype == torch.float32 else 5e-2
    if difference > tolerance:
        raise ValueError(
            f"cached item states do not reproduce this backbone's forward (max difference {difference:.2e}): "
            f"{type(model.model).__name__} may transform inputs_embeds inside its forward; the cache is not used"
        )


__all__ = [
    "ItemCacheMixin",
    "build_item_cache",
    "cache_refusal",
    "cached_modules",
    "check_cache_exact",
]
