"""Running a transformers decoder's own layers one by one, with its own mask and rotary helpers.

The fast paths (packed intra layers, the item-state cache, the item-level inter half) run a backbone's layers in
slices: the leading intra run on short item sequences, the layers above on a sequence whose item tokens come from
elsewhere. They call the backbone's own modules (``embed_tokens``, each decoder layer, ``rotary_emb``, ``norm``) and
transformers' own mask builders, so no module is ever replaced: concurrent forwards on one model are safe, and hooks,
``torch.compile``, gradient checkpointing and FSDP see the real modules (docs/architecture.md, "What a backbone
needs").

What a backbone must have for these paths: a ``layers`` list of decoder layers with a ``self_attn`` module, an
``embed_tokens``-style input embedding (``get_input_embeddings``), a final ``norm`` and a ``rotary_emb`` (relative
positions). Full and sliding-window attention layers are supported (``config.layer_types`` or Mistral's
``config.sliding_window``); other layer kinds (linear attention, ...) are refused. The masked path (the backbone's
own ``forward``) stays the reference: :func:`check_explicit_forward` compares the two on a probe batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers.masking_utils import create_causal_mask

from .attention import ItemSegments, find_decoder_layers

FULL_ATTENTION = "full_attention"
SLIDING_ATTENTION = "sliding_attention"


@dataclass(frozen=True)
class DecoderParts:
    """The modules of a decoder backbone that the explicit forward calls, and each layer's mask kind."""

    backbone: nn.Module
    layers: nn.ModuleList
    mask_kinds: tuple[str, ...]  # per layer: "full_attention" or "sliding_attention"
    sliding_window: int | None

    @property
    def config(self):
        return self.backbone.config

    @property
    def num_layers(self) -> int:
        return len(self.layers)


def decoder_parts(model: nn.Module) -> DecoderParts:
    """The decoder backbone inside ``model`` and what the explicit forward needs of it; refuses, with the reason, a
    backbone it cannot run layer by layer exactly.

    Example:
        >>> from transformers import LlamaConfig, LlamaModel
        >>> parts = decoder_parts(LlamaModel(LlamaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64,
        ...                                              num_attention_heads=4, num_key_value_heads=2)))
        >>> parts.num_layers, parts.mask_kinds
        (2, ('full_attention', 'full_attention'))
    """
    backbone, layers = find_decoder_layers(model)
    name = type(backbone).__name__
    for attribute in ("norm", "rotary_emb"):
        if getattr(backbone, attribute, None) is None:
            raise ValueError(
                f"{name} has no `{attribute}`: the packed, cached and item-level paths run the backbone's layers one "
                "by one and need its final norm and rotary position embedding (relative positions); use the masked "
                "path (intra_implementation='masked', no item cache, num_item_tokens=None)"
            )
    config = backbone.config
    layer_types = getattr(config, "layer_types", None)
    sliding_window = getattr(config, "sliding_window", None)
    if layer_types is None:
        kind = SLIDING_ATTENTION if sliding_window is not None else FULL_ATTENTION
        mask_kinds = (kind,) * len(layers)
    else:
        mask_kinds = tuple(layer_types[: len(layers)])
        unknown = sorted({kind for kind in mask_kinds} - {FULL_ATTENTION, SLIDING_ATTENTION})
        if unknown:
            raise ValueError(
                f"{name} has layers of kind {unknown}: the explicit forward runs full and sliding-window attention "
                "layers only; use the masked path"
            )
    if SLIDING_ATTENTION in mask_kinds and not sliding_window:
        raise ValueError(f"{name} has sliding-window layers but config.sliding_window is {sliding_window!r}")
    return DecoderParts(backbone, layers, mask_kinds, sliding_window if SLIDING_ATTENTION in mask_kinds else None)


def _window_by_positions(position_ids: torch.Tensor, window: int) -> Callable:
    """A mask function keeping keys less than ``window`` positions behind the query, by position ids.

    The backbone's own sliding mask counts indices; on a compacted sequence (context computed apart, items kept
    through a few of their states) indices no longer are the tokens' distances, their position ids are. On a whole
    sequence the two agree: position ids count real tokens, which are contiguous.
    """

    def inside_window(batch_idx, head_idx, q_idx, kv_idx):
        return position_ids[batch_idx, q_idx] - position_ids[batch_idx, kv_idx] < window

    return inside_window


def layer_masks(
    parts: DecoderParts, hidden_states: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
) -> dict[str, object]:
    """The backbone's own mask for each mask kind of its layers (padding and causality; sliding windows by
    position), built by transformers' mask builders for the backbone's attention implementation."""
    arguments = dict(
        config=parts.config, inputs_embeds=hidden_states, attention_mask=attention_mask, cache=None, position_ids=None
    )
    masks: dict[str, object] = {FULL_ATTENTION: create_causal_mask(**arguments)}
    if parts.sliding_window is not None:
        # within the window every key is seen: the plain causal mask is then the sliding one (no extra mask to build)
        span = int(position_ids.max()) - int(position_ids.min()) if position_ids.numel() else 0
        if span < parts.sliding_window:
            masks[SLIDING_ATTENTION] = masks[FULL_ATTENTION]
        else:
            masks[SLIDING_ATTENTION] = create_causal_mask(
                **arguments, and_mask_function=_window_by_positions(position_ids, parts.sliding_window)
            )
    return masks


def run_layers(
    parts: DecoderParts,
    hidden_states: torch.Tensor,
    start: int,
    stop: int,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor,
    item_segments: ItemSegments | None,
    apply_norm: bool = False,
    all_hidden_states: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run decoder layers ``[start, stop)`` on ``hidden_states`` (their input), as the backbone's forward would.

    ``attention_mask`` is the 2D padding mask (``None``: no padding, then a backend may use its ``is_causal``
    kernel); ``position_ids`` give every token's true position; ``item_segments`` reach the item-aware attention
    functions. ``apply_norm`` applies the final norm after the last layer. With ``all_hidden_states``, each layer's
    output is appended to it (the last one after the norm when ``apply_norm``, as transformers reports it).
    """
    if not 0 <= start <= stop <= parts.num_layers:
        raise ValueError(f"cannot run layers [{start}, {stop}) of a backbone with {parts.num_layers} layers")
    if start == stop:
        return parts.backbone.norm(hidden_states) if apply_norm else hidden_states
    masks = layer_masks(parts, hidden_states, attention_mask, position_ids)
    position_embeddings = parts.backbone.rotary_emb(hidden_states, position_ids)
    extra = {"item_segments": item_segments} if item_segments is not None else {}
    for index in range(start, stop):
        hidden_states = parts.layers[index](
            hidden_states,
            attention_mask=masks[parts.mask_kinds[index]],
            position_embeddings=position_embeddings,
            position_ids=position_ids,
            cache=None,
            use_cache=False,
            **extra,
        )
        if isinstance(hidden_states, tuple):  # decoder layers of older modeling files return a tuple
            hidden_states = hidden_states[0]
        if apply_norm and index == stop - 1:
            hidden_states = parts.backbone.norm(hidden_states)
        if all_hidden_states is not None:
            all_hidden_states.append(hidden_states)
    return hidden_states


@torch.no_grad()
def check_explicit_forward(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, item_segment_ids: torch.Tensor
) -> float:
    """The largest difference between the backbone's own forward and :func:`run_layers` over all its layers on one
    batch; raises when they differ (a backbone that transforms its inputs inside its forward, say, by scaling its
    embeddings: the explicit paths would then not be the same model)."""
    parts = decoder_parts(model)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    reference = parts.backbone(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        item_segment_ids=item_segment_ids,
        use_cache=False,
    ).last_hidden_state
    embeddings = parts.backbone.get_input_embeddings()(input_ids)
    explicit = run_layers(
        parts,
        embeddings,
        0,
        parts.num_layers,
        attention_mask,
        position_ids,
        ItemSegments(item_segment_ids),
        apply_norm=True,
    )
    real = attention_mask.bool()
    difference = float((explicit - reference)[real].abs().max())
    tolerance = 1e-3 if explicit.dtype == torch.float32 else 5e-2
    if difference > tolerance:
        raise ValueError(
            f"running {type(parts.backbone).__name__}'s layers one by one does not reproduce its forward (max "
            f"difference {difference:.2e}): it may transform its inputs inside its forward; use the masked path"
        )
    return difference


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module`` in eval mode (no dropout) and give it back in the mode it was in: what the item-state cache
    and the text-derived item embeddings store are the layers' own states, whatever mode the model is in."""
    training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(training)


__all__ = ["DecoderParts", "check_explicit_forward", "decoder_parts", "eval_mode", "layer_masks", "run_layers"]
