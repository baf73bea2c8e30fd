"""The item-state cache's lifecycle on a model: when it can be exact, building it (and checking it reproduces the
masked forward), attaching it, and rebuilding or dropping it when the model changes under it.

Why it is exact, and when it is refused: docs/architecture.md, "Compute once, supervise everywhere"; the cache
itself (what it stores and how it checks it is still current) is ``item_cache.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn
from transformers.utils import logging
from transformers.utils.logging import tqdm

from .adapter import TextRowsReader, check_item_texts
from .attention import current_attn_implementation
from .catalog import item_token_sequences
from .decoder import decoder_parts, eval_mode
from .forward_plan import ForwardPath
from .item_cache import CacheRecord, ItemStateCache, distinct_items, rendering_digest
from .item_cache_files import read_cache_record
from .item_states import encode_item_batches

logger = logging.get_logger(__name__)


class ItemCacheMixin:
    """The item-state cache of an [`IAMForCausalRecommendation`]: ``enable_item_cache``, ``disable_item_cache``, and
    its refresh when the attention implementation or the layer kinds change."""

    item_cache: ItemStateCache | None

    def enable_item_cache(
        self,
        renderer,
        batch_size: int = 256,
        cache_dir: str | None = None,
        init_item_embeddings_from_text: bool = False,
    ) -> ItemStateCache:
        """Compute every catalog item's states after the leading intra layers once, and use them in every forward.

        ``renderer``: what renders the catalog's items as tokens (an [`IAMDataCollator`], or any object with a
        ``catalog`` and ``item_token_ids(catalog_index)``); or the token sequences themselves, in catalog order.

        Exact (to float rounding) because in those layers an item sees only itself and rotary positions are
        relative: the forward, `recommend`, evaluation inside the `Trainer` and the pipeline then run only the layers
        above for item tokens. Refused, with the reason, when it could not be exact: no leading intra run, positions
        that are not rotary, or trainable cached layers or token embeddings (freeze them first). The cache checks at
        each forward that it still describes the model (docs/architecture.md, "Compute once"). Built ``batch_size``
        items at a time, with a progress bar (``transformers.utils.logging.disable_progress_bar()`` hides it).

        ``cache_dir`` (a folder, say beside the checkpoint): a cache saved there for this model (the same weights
        digest of the cached modules, leading intra layers, ``num_item_tokens``, attention implementation and
        rendering of the catalog) is loaded instead of rebuilt, and checked as a built one; one saved for another
        model, or unreadable, is rebuilt (the log says why) and saved over; none is built and saved.

        ``init_item_embeddings_from_text``: also start each item's adapter row from its text, as
        ``init_item_embeddings_from_text`` does, in the same pass over the items (their cached layers are the lower
        layers of that reading): one pass instead of two. A cache loaded from ``cache_dir`` leaves the rows to a pass
        of their own.

        Example:
            >>> _ = model.model.requires_grad_(False)
            >>> cache = model.enable_item_cache(collator)
            >>> cache.num_items == len(model.catalog)
            True
        """
        sequences = item_token_sequences(renderer, self.catalog)
        reader, entries = None, None
        if init_item_embeddings_from_text:
            if len(sequences) != self.config.num_items:
                raise ValueError(f"got token ids for {len(sequences)} items, the catalog has {self.config.num_items}")
            _, first, entries = distinct_items(sequences)
            reader = TextRowsReader(decoder_parts(self.model), self.adapter, len(first), self.num_leading_intra_layers)
        if cache_dir is None:
            self.item_cache = build_item_cache(self, sequences, batch_size, reader)
        else:
            self.item_cache = load_or_build_item_cache(self, sequences, cache_dir, batch_size, reader)
        if reader is not None:
            if bool(reader.read.any()):
                self._start_item_rows(reader.rows(entries))
            else:  # the cache was loaded: nothing was read
                self.init_item_embeddings_from_text(sequences)
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
        self.item_cache.max_contexts = cache.max_contexts
        logger.warning(f"item-state cache rebuilt ({reason}): {self.item_cache.num_items} items")


def cached_modules(model) -> tuple[list[nn.Module], nn.Module]:
    """What the states of the leading intra run are computed from: the token embeddings and those layers (modules),
    and the rotary embedding (its frequencies)."""
    parts = decoder_parts(model.model)
    modules = [parts.backbone.get_input_embeddings(), *parts.layers[: model.num_leading_intra_layers]]
    return modules, parts.backbone.rotary_emb


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


def build_item_cache(
    model, token_sequences: Sequence[Sequence[int]], batch_size: int = 256, rows_reader: TextRowsReader | None = None
) -> ItemStateCache:
    """The cache of ``model`` (an ``IAMForCausalRecommendation``) for these item token sequences (a catalog's
    rendering, in catalog order). Refuses, with the reason, when it could not be exact, and checks on a probe batch
    that the cached forward gives the masked forward's states. ``rows_reader`` (a [`TextRowsReader`] of the distinct
    sequences, starting above the cached layers) reads the items' rows from text in the same pass."""
    refusal = cache_refusal(model)
    if refusal is not None:
        raise ValueError(refusal)
    num_layers, num_item_tokens = model.num_leading_intra_layers, model.config.num_item_tokens
    states = _encode_stored_states(model, token_sequences, num_layers, num_item_tokens, batch_size, rows_reader)
    cache = ItemStateCache.from_stored(token_sequences, states, num_layers, num_item_tokens)
    modules, rotary = cached_modules(model)
    cache.bind(modules, rotary, current_attn_implementation(model.config))
    check_cache_exact(model, cache)
    return cache


@torch.no_grad()
def _encode_stored_states(
    model,
    token_sequences,
    num_layers: int,
    num_item_tokens: int | None,
    batch_size: int,
    rows_reader: TextRowsReader | None = None,
):
    """The stored states of each distinct sequence (in the cache's entry order), concatenated, encoded
    ``batch_size`` items at a time (shortest first) under a progress bar: each batch's padded activations are copied
    into the preallocated states and dropped, so no more than one batch of them is held beside the stored states.
    ``rows_reader`` is given each batch (the entries, tokens and padded states) before they are dropped."""
    catalog = model.catalog if model.catalog is not None and len(model.catalog) == len(token_sequences) else None
    check_item_texts(token_sequences, catalog)  # named by item id when the sequences are the catalog's
    distinct = [token_sequences[index] for index in distinct_items(token_sequences)[1].tolist()]
    stored = [len(tokens) if num_item_tokens is None else min(len(tokens), num_item_tokens) for tokens in distinct]
    offsets = [0]
    for count in stored:
        offsets.append(offsets[-1] + count)
    parts, states = decoder_parts(model.model), None
    description = "item-state cache" if rows_reader is None else "item-state cache and rows from text"
    with tqdm(total=len(distinct), desc=description, unit="item") as bar:
        for chunk, tokens, encoded in encode_item_batches(parts, distinct, num_layers, batch_size):
            lengths = [len(distinct[entry]) for entry in chunk]
            kept = torch.cat(
                [
                    encoded[row, length - stored[entry] : length]
                    for row, (entry, length) in enumerate(zip(chunk, lengths))
                ]
            )
            if states is None:
                states = kept.new_empty((offsets[-1], kept.shape[-1]))
            rows = torch.cat([torch.arange(offsets[entry], offsets[entry + 1]) for entry in chunk])
            states.index_copy_(0, rows.to(states.device), kept)
            if rows_reader is not None:
                rows_reader(chunk, tokens, encoded)
            del encoded, kept
            bar.update(len(chunk))
    return states


def load_or_build_item_cache(
    model,
    token_sequences: Sequence[Sequence[int]],
    folder,
    batch_size: int = 256,
    rows_reader: TextRowsReader | None = None,
):
    """The cache saved in ``folder`` when it was computed for ``model`` and these sequences (loaded, bound and
    checked as a built one); else built (``rows_reader``: see :func:`build_item_cache`) and saved there, the log
    saying why the saved one was not used."""
    refusal = cache_refusal(model)
    if refusal is not None:
        raise ValueError(refusal)
    modules, rotary = cached_modules(model)
    attn_implementation = current_attn_implementation(model.config)
    wanted = (model.num_leading_intra_layers, model.config.num_item_tokens, attn_implementation)
    reason = None
    try:
        saved = read_cache_record(folder)
        if saved is not None:
            saved = CacheRecord(**{field.name: saved[field.name] for field in dataclasses.fields(CacheRecord)})
    except (KeyError, TypeError, ValueError) as error:
        saved, reason = None, f"unreadable ({error})"
    if saved is not None:
        # all but the weights digest from the json alone: the tensors are read only when those match
        current = CacheRecord(*wanted, rendering_digest(token_sequences), saved.weights_digest)
        if current == saved:
            try:
                cache = ItemStateCache.load(folder, model.get_input_embeddings().weight.device)
                cache.bind(modules, rotary, attn_implementation)  # the digest of this model's cached weights
                current = cache.record
                if current == saved:
                    check_cache_exact(model, cache)
                    logger.info(f"item-state cache loaded from {folder}: {cache.num_items} items")
                    return cache
            except ValueError as error:
                reason = f"unreadable or inexact ({error})"
        if current != saved:
            names = [
                f.name for f in dataclasses.fields(CacheRecord) if getattr(saved, f.name) != getattr(current, f.name)
            ]
            reason = f"saved for another model, {', '.join(names)} differ: {'; '.join(saved.differences(current))}"
    if reason is not None:
        logger.warning(f"item-state cache in {folder} not used, rebuilt and saved over it: {reason}")
    cache = build_item_cache(model, token_sequences, batch_size, rows_reader)
    cache.save(folder)
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
    "load_or_build_item_cache",
]
