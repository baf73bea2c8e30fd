"""The exact item-state cache: every catalog item's states after the leading intra layers, computed once.

Why it is exact, and when it is refused: docs/architecture.md, "Compute once, supervise everywhere". The packed
computation it stores is :func:`~transformers_iam.core.item_states.encode_items`; a forward reads it through
:func:`~transformers_iam.core.item_states.forward_from_item_states`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .attention import find_decoder_layers
from .collator import IAMDataCollator
from .item_states import encode_items


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


def build_item_cache(model, collator: IAMDataCollator, batch_size: int = 256) -> ItemStateCache:
    """The cache of ``model`` (an ``IAMForCausalRecommendation``) for ``collator``'s rendering of its catalog.

    Refuses, with the reason, when it could not be exact (see ``IAMForCausalRecommendation.enable_item_cache``).
    """
    num_layers = model.num_leading_intra_layers
    if num_layers == 0:
        raise ValueError(
            f"no leading intra run to cache: the layers are {model.config.resolved_layer_types}; the item-state "
            "cache needs the bottom layer(s) to be intra"
        )
    if getattr(model.model, "rotary_emb", None) is None:
        raise ValueError(
            f"{type(model.model).__name__} has no rotary position embedding: with absolute positions an item's "
            "states depend on where it sits, so they cannot be cached"
        )
    if model.catalog is not None and collator.catalog != model.catalog:
        raise ValueError("the collator's catalog is not this model's catalog: the cache would describe other items")
    _, layers = find_decoder_layers(model.model)
    cached_modules = [model.model.get_input_embeddings(), *layers[:num_layers]]
    named = list(cached_modules[0].named_parameters(prefix="embeddings"))
    for index in range(num_layers):
        named += list(layers[index].named_parameters(prefix=f"layers.{index}"))
    trainable = [name for name, parameter in named if parameter.requires_grad]
    if trainable:
        raise ValueError(
            f"cached weights are trainable ({', '.join(trainable[:3])}{', ...' if len(trainable) > 3 else ''}): "
            f"freeze the token embeddings and the first {num_layers} layers (requires_grad_(False)) so the "
            "cached states cannot go stale"
        )
    sequences = [collator.item_token_ids(index) for index in range(len(collator.catalog))]
    with torch.no_grad():
        states = encode_items(model.model, sequences, num_layers, batch_size=batch_size)
    cache = ItemStateCache(sequences, states, num_layers)
    cache.bind(cached_modules)
    check_cache_exact(model, collator, cache)
    return cache


@torch.no_grad()
def check_cache_exact(model, collator: IAMDataCollator, cache: ItemStateCache) -> None:
    """Refuse a backbone for which feeding states as ``inputs_embeds`` is not the same forward (one that scales
    its embeddings inside the forward, say): compare both paths on a probe batch."""
    items = collator.catalog.item_ids
    probe = collator([{"history": items[:3]}, {"history": items[-2:]}])
    device = model.adapter.dense.weight.device
    probe = {key: value.to(device) for key, value in probe.items() if key != "history_item_indices"}
    attention_mask = probe["attention_mask"]
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    saved, model.item_cache = model.item_cache, cache
    try:
        arguments = (probe["input_ids"], attention_mask, position_ids, probe["item_segment_ids"])
        cached = model._backbone_outputs(*arguments, use_item_states=True).last_hidden_state
        masked = model._backbone_outputs(*arguments, use_item_states=False).last_hidden_state
    finally:
        model.item_cache = saved
    real = attention_mask.bool()
    difference = float((cached - masked)[real].abs().max())
    tolerance = 1e-3 if cached.dtype == torch.float32 else 5e-2
    if difference > tolerance:
        raise ValueError(
            f"cached item states do not reproduce this backbone's forward (max difference {difference:.2e}): "
            f"{type(model.model).__name__} may transform inputs_embeds inside its forward; the cache is not used"
        )


__all__ = ["ItemStateCache", "build_item_cache", "check_cache_exact"]
