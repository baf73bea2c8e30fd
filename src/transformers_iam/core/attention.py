"""Plugging item-aware masks into any transformers decoder, without copying its code.

How it works (docs/architecture.md, "How it plugs into transformers"):

1. ``iam_sdpa`` and ``iam_eager`` are registered in transformers' ``AttentionInterface``
   (and in ``AttentionMaskInterface``, so the backbone still builds its padding mask).
2. :func:`enable_item_aware_attention` tags each attention module with its layer kind
   (``module.iam_layer_type``), switches the model to the ``iam_`` twin of its attention
   implementation, and adds a forward pre-hook on the decoder backbone that turns the
   ``item_segment_ids`` keyword into an :class:`ItemSegments` shared by all layers of
   that forward (so masks are built once per kind, not once per layer).
3. In each attention call, an ``intra``/``inter`` module ANDs the mask of its kind with
   the backbone's own mask (padding, sliding window, cache offsets) and then calls the
   stock backend. ``full`` modules run the stock backend untouched.

``iam_flex`` (:mod:`transformers_iam.core.flex_attention`) is the block-sparse backend for GPUs:
``attn_implementation="flex_attention"`` maps to it. Its key is not ``iam_flex_attention``:
transformers runs its own flex-support check on any key containing ``flex_attention``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

from .flex_attention import FLEX_IMPLEMENTATION, iam_flex_attention_forward, iam_flex_mask
from .masks import check_layer_types, ensure_no_empty_rows, item_aware_mask

# Stock implementation -> its item-aware twin. Never put "flash" in a key: transformers then
# tries to fetch a kernel from the Hub.
IAM_ATTENTION_IMPLEMENTATIONS: dict[str, str] = {
    "sdpa": "iam_sdpa",
    "eager": "iam_eager",
    "flex_attention": FLEX_IMPLEMENTATION,
}


class ItemSegments:
    """The item segment ids of one forward pass, with the masks already built from them.

    Layers of the same kind share a backbone mask object, so each (kind, backbone mask)
    pair is combined once per forward and reused by every layer of that kind.
    """

    def __init__(self, item_segment_ids: torch.Tensor | None):
        self.item_segment_ids = item_segment_ids.long() if item_segment_ids is not None else None
        self._masks: dict[tuple, torch.Tensor] = {}

    @classmethod
    def one_item_per_row(cls) -> ItemSegments:
        """Each row is one whole item (packed intra attention): ``intra`` is then plain causal attention, so the
        backbone's own mask is used as is, and a batch without padding runs the backend's ``is_causal`` kernel."""
        return cls(None)

    @property
    def rows_are_items(self) -> bool:
        return self.item_segment_ids is None

    def mask_for(
        self, layer_type: str, base_mask: torch.Tensor | None, q_length: int, kv_length: int, dtype: torch.dtype | None
    ) -> torch.Tensor:
        """The backbone's mask restricted to ``layer_type``: bool for sdpa, additive float for eager."""
        cache_key = (layer_type, id(base_mask), q_length, kv_length, dtype)
        if cache_key in self._masks:
            return self._masks[cache_key]
        batch_size, seg_length = self.item_segment_ids.shape
        if seg_length != kv_length:
            raise ValueError(
                f"item_segment_ids covers {seg_length} positions but attention runs over {kv_length} keys; "
                "with a KV cache, pass segment ids for the past and the new tokens together."
            )
        allowed = item_aware_mask(self.item_segment_ids, layer_type, q_length)
        if base_mask is None:
            mask = ensure_no_empty_rows(allowed)
            if dtype is not None:  # eager wants an additive mask
                mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
                    ~mask, torch.finfo(dtype).min
                )
        elif base_mask.dtype == torch.bool:
            mask = ensure_no_empty_rows(base_mask & allowed)
        else:
            min_value = torch.finfo(base_mask.dtype).min
            base_allowed = base_mask > min_value / 2
            allowed = ensure_no_empty_rows(base_allowed & allowed)
            # Keep any bias the backbone put on allowed positions; opened diagonals get 0.
            mask = torch.where(allowed, torch.where(base_allowed, base_mask, 0.0), min_value).to(base_mask.dtype)
        self._masks[cache_key] = mask
        return mask


def _stock_eager(module: nn.Module) -> Callable:
    """The eager attention of the module's own modeling file (every decoder defines one)."""
    function = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if function is None:
        raise NotImplementedError(
            f"{type(module).__name__} has no eager_attention_forward in its modeling file; "
            "use attn_implementation='sdpa'"
        )
    return function


def _item_aware(stock: Callable[[nn.Module], Callable], additive_mask: bool) -> Callable:
    def attention_forward(
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        *args,
        **kwargs,
    ):
        segments: ItemSegments | None = kwargs.pop("item_segments", None)
        layer_type = getattr(module, "iam_layer_type", "full")
        if layer_type == "intra" and segments is not None and segments.rows_are_items:
            pass  # within one item, intra attention is causal attention
        elif layer_type != "full":
            if segments is None or segments.rows_are_items:
                raise ValueError(
                    f"Layer {getattr(module, 'layer_idx', '?')} is an {layer_type!r} layer and needs "
                    "`item_segment_ids` (0 = context, 1..n = history items) in the forward call."
                )
            attention_mask = segments.mask_for(
                layer_type, attention_mask, query.shape[2], key.shape[2], query.dtype if additive_mask else None
            )
        return stock(module)(module, query, key, value, attention_mask, *args, **kwargs)

    return attention_forward


iam_sdpa_attention_forward = _item_aware(lambda module: sdpa_attention_forward, additive_mask=False)
iam_eager_attention_forward = _item_aware(_stock_eager, additive_mask=True)

AttentionInterface.register("iam_sdpa", iam_sdpa_attention_forward)
AttentionInterface.register("iam_eager", iam_eager_attention_forward)
AttentionMaskInterface.register("iam_sdpa", sdpa_mask)
AttentionMaskInterface.register("iam_eager", eager_mask)
AttentionInterface.register(FLEX_IMPLEMENTATION, iam_flex_attention_forward)
AttentionMaskInterface.register(FLEX_IMPLEMENTATION, iam_flex_mask)


def current_attn_implementation(config) -> str | None:
    """The attention implementation a config asks for.

    transformers has no public getter (it reads ``config._attn_implementation`` itself); this is the one place the
    plugin reads it. Setting goes through public routes: ``attn_implementation=`` on configs and ``from_config``, and
    ``set_attn_implementation``.
    """
    return config._attn_implementation


def item_aware_implementation(attn_implementation: str | None) -> str:
    """Map a stock attention implementation to its item-aware twin (``None`` means sdpa)."""
    attn_implementation = attn_implementation or "sdpa"
    if attn_implementation in IAM_ATTENTION_IMPLEMENTATIONS.values():
        return attn_implementation
    if attn_implementation not in IAM_ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation={attn_implementation!r} has no item-aware version; "
            f"supported: {sorted(IAM_ATTENTION_IMPLEMENTATIONS)}"
        )
    return IAM_ATTENTION_IMPLEMENTATIONS[attn_implementation]


def find_decoder_layers(model: nn.Module) -> tuple[nn.Module, nn.ModuleList]:
    """The decoder backbone (the module that owns ``layers``) and its layers."""
    for module in model.modules():
        layers = getattr(module, "layers", None)
        if isinstance(layers, nn.ModuleList) and len(layers) and hasattr(layers[0], "self_attn"):
            return module, layers
    raise ValueError(f"{type(model).__name__} has no decoder layers with a `self_attn` module")


def _segments_pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    item_segment_ids = kwargs.pop("item_segment_ids", None)
    if item_segment_ids is not None:
        kwargs["item_segments"] = ItemSegments(item_segment_ids)
    return args, kwargs


def enable_item_aware_attention(model: nn.Module, layer_types: Sequence[str]) -> nn.Module:
    """Make ``model`` (any transformers decoder, bare or with a head) use item-aware attention.

    Returns the decoder backbone, whose forward now accepts ``item_segment_ids``.

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> lm = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64,
        ...                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=100))
        >>> _ = enable_item_aware_attention(lm, ["intra", "inter"])
        >>> current_attn_implementation(lm.config)
        'iam_sdpa'
    """
    backbone, layers = find_decoder_layers(model)
    layer_types = check_layer_types(layer_types, num_layers=len(layers))
    for layer, layer_type in zip(layers, layer_types):
        layer.self_attn.iam_layer_type = layer_type
    if not getattr(backbone, "_iam_hook_registered", False):
        backbone.register_forward_pre_hook(_segments_pre_hook, with_kwargs=True)
        backbone._iam_hook_registered = True
    if isinstance(model, PreTrainedModel):
        implementation = item_aware_implementation(current_attn_implementation(model.config))
        if current_attn_implementation(model.config) != implementation:
            model.set_attn_implementation(implementation)
    return backbone
