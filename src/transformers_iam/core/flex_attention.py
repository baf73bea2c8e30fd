"""``iam_flex``: item-aware attention on PyTorch FlexAttention, with block-sparse masks built from segment ids.

SDPA with an explicit mask runs dense attention over the whole (seq x seq) square, so an
``intra`` layer costs as much as a causal one although most of its square is masked.
FlexAttention skips every (128 x 128) block that a ``BlockMask`` marks as empty and applies
the mask inside the partly masked blocks from a ``mask_mod`` that reads the segment ids:
no dense mask reaches the kernel (docs/architecture.md, "How it plugs into transformers").

How the pieces meet:

1. The backbone's mask builder calls :func:`iam_flex_mask` (registered in
   ``AttentionMaskInterface``); it returns a :class:`FlexBaseMask`, the backbone's own pattern
   (causal, sliding window) and the 2D padding mask, without building anything.
2. Each attention call of a layer of kind ``intra``/``inter``/``full`` asks for the
   ``BlockMask`` of its kind; the first layer of that kind in a forward builds it from the
   segment ids and the padding mask, and caches it on the forward's ``ItemSegments``, so the
   other layers of that kind reuse it (one build per kind and forward).
3. :func:`iam_flex_attention_forward` calls torch's ``flex_attention``: compiled on CUDA (the
   fused kernel), un-compiled elsewhere (correct, but it materialises the scores: tests only).

The mask semantics are exactly those of :mod:`transformers_iam.core.masks`, including the rule
that a query whose row would be empty (a padding query) sees itself.

FlexAttention has no backward on CPU in torch 2.13: training on CPU must use
``attn_implementation="sdpa"``; ``iam_flex`` refuses it with a clear error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
from transformers.integrations.sdpa_attention import repeat_kv
from transformers.masking_utils import causal_mask_function, prepare_padding_mask

FLEX_IMPLEMENTATION = "iam_flex"

_compiled_flex_attention: Callable | None = None


@dataclass
class FlexBaseMask:
    """The backbone's own mask for ``iam_flex`` layers: its pattern and padding, kept as inputs, not as a tensor.

    Every layer of one forward (of one backbone pattern) receives the same object, so it is also
    where the ``BlockMask`` of a ``full`` layer is cached when no segment ids were given.
    """

    mask_function: Callable
    padding_mask: torch.Tensor | None  # (batch, kv_offset + kv_length) bool, True = real token
    batch_size: int
    q_length: int
    kv_length: int
    q_offset: int = 0
    kv_offset: int = 0
    block_masks: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        # transformers reads `.shape` of a ready mask; this is the shape of the mask it stands for
        return (self.batch_size, 1, self.q_length, self.kv_length)


def iam_flex_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    mask_function: Callable = causal_mask_function,
    attention_mask: torch.Tensor | None = None,
    **kwargs,
) -> FlexBaseMask:
    """The ``AttentionMaskInterface`` entry of ``iam_flex``: what each layer needs to build its ``BlockMask``.

    Example:
        >>> base = iam_flex_mask(batch_size=1, q_length=4, kv_length=4, attention_mask=torch.tensor([[0, 1, 1, 1]]))
        >>> base.shape, base.padding_mask.tolist()
        ((1, 1, 4, 4), [[False, True, True, True]])
    """
    padding_mask = None
    if attention_mask is not None:
        padding_mask = prepare_padding_mask(attention_mask.bool(), kv_length, kv_offset)
    return FlexBaseMask(mask_function, padding_mask, batch_size, q_length, kv_length, q_offset, kv_offset)


def item_aware_mask_mod(
    layer_type: str, base: FlexBaseMask, item_segment_ids: torch.Tensor | None, q_length: int, kv_length: int
) -> Callable:
    """A FlexAttention ``mask_mod`` for ``layer_type``: the backbone's pattern, padding, and the item-aware rule.

    Written with tensor operations only, so it works elementwise inside the kernel and
    broadcast over whole index grids (which is how empty rows are found).
    """
    pattern, padding = base.mask_function, base.padding_mask
    q_offset, kv_offset = base.q_offset, base.kv_offset
    q_start = kv_length - q_length  # queries are the last q_length positions, as in core/masks.py

    def mask_mod(batch_idx, head_idx, q_idx, kv_idx):
        allowed = pattern(batch_idx, head_idx, q_idx + q_offset, kv_idx + kv_offset)
        if padding is not None:
            allowed = allowed & padding[batch_idx, kv_idx + kv_offset]
        if layer_type == "full":
            return allowed
        seg_q = item_segment_ids[batch_idx, q_idx + q_start]
        seg_k = item_segment_ids[batch_idx, kv_idx]
        if layer_type == "intra":
            return allowed & (seg_q == seg_k)
        return allowed & ((seg_q != seg_k) | (q_idx + q_start == kv_idx) | (seg_q == 0))

    return mask_mod


def _with_diagonal_for_empty_rows(mask_mod: Callable, batch_size: int, q_length: int, kv_length: int, device):
    """Open the diagonal of rows that would see nothing (padding queries), as ``ensure_no_empty_rows`` does.

    The check evaluates ``mask_mod`` once over the whole (batch, q, kv) grid; the un-compiled
    ``create_block_mask`` materialises the same grid anyway.
    """
    batch = torch.arange(batch_size, device=device)[:, None, None]
    q_idx = torch.arange(q_length, device=device)[None, :, None]
    kv_idx = torch.arange(kv_length, device=device)[None, None, :]
    head = torch.zeros((), dtype=torch.long, device=device)
    empty = ~mask_mod(batch, head, q_idx, kv_idx).expand(batch_size, q_length, kv_length).any(-1)  # (batch, q)
    if not bool(empty.any()):
        return mask_mod
    q_start = kv_length - q_length

    def with_diagonal(batch_idx, head_idx, q_idx, kv_idx):
        return mask_mod(batch_idx, head_idx, q_idx, kv_idx) | (empty[batch_idx, q_idx] & (q_idx + q_start == kv_idx))

    return with_diagonal


def build_block_mask(
    layer_type: str, base: FlexBaseMask, item_segment_ids: torch.Tensor | None, q_length: int, kv_length: int
) -> BlockMask:
    """The ``BlockMask`` of one layer kind for one forward pass."""
    device = base.padding_mask.device if base.padding_mask is not None else None
    if item_segment_ids is not None:
        device = item_segment_ids.device
    mask_mod = item_aware_mask_mod(layer_type, base, item_segment_ids, q_length, kv_length)
    mask_mod = _with_diagonal_for_empty_rows(mask_mod, base.batch_size, q_length, kv_length, device)
    # H=None: one mask for all heads. Un-compiled mask creation: the mod closes over per-batch tensors whose
    # shapes change every batch, and a compiled builder would recompile for each.
    return create_block_mask(mask_mod, B=base.batch_size, H=None, Q_LEN=q_length, KV_LEN=kv_length, device=device)


def block_mask_for(
    layer_type: str, base: FlexBaseMask, segments, q_length: int, kv_length: int
) -> BlockMask:  # segments: ItemSegments | None (not imported: attention.py imports this module)
    """The cached ``BlockMask`` of ``layer_type``: built by the first layer of that kind in a forward."""
    cache_key = ("flex", layer_type, id(base), q_length, kv_length)
    cache = segments._masks if segments is not None else base.block_masks
    if cache_key not in cache:
        item_segment_ids = None
        if segments is not None:
            item_segment_ids = segments.item_segment_ids
            if item_segment_ids.shape[1] != kv_length:
                raise ValueError(
                    f"item_segment_ids covers {item_segment_ids.shape[1]} positions but attention runs over "
                    f"{kv_length} keys; with a KV cache, pass segment ids for the past and the new tokens together."
                )
        cache[cache_key] = build_block_mask(layer_type, base, item_segment_ids, q_length, kv_length)
    return cache[cache_key]


def _flex_function(device: torch.device) -> Callable:
    """Compiled FlexAttention on CUDA (the fused block-sparse kernel); un-compiled elsewhere (tests, CPU inference)."""
    global _compiled_flex_attention
    if device.type != "cuda" or torch.compiler.is_compiling():
        return flex_attention
    if _compiled_flex_attention is None:
        _compiled_flex_attention = torch.compile(flex_attention)
    return _compiled_flex_attention


def iam_flex_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: FlexBaseMask | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Item-aware FlexAttention: q/k/v ``(batch, heads, seq, head_dim)`` -> ``(batch, seq, heads, head_dim)``.

    Example:
        >>> from transformers import LlamaConfig
        >>> from transformers_iam import IAMConfig, IAMForCausalRecommendation
        >>> text_config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        ...                           num_attention_heads=4, num_key_value_heads=2)
        >>> config = IAMConfig(text_config=text_config, num_items=5, attn_implementation="flex_attention")
        >>> model = IAMForCausalRecommendation(config).eval()
        >>> model.config._attn_implementation
        'iam_flex'
        >>> input_ids, item_segment_ids = torch.tensor([[5, 6, 7, 8]]), torch.tensor([[0, 1, 1, 0]])
        >>> with torch.no_grad():  # FlexAttention has no backward on CPU
        ...     model(input_ids=input_ids, item_segment_ids=item_segment_ids).logits.shape
        torch.Size([1, 5])
    """
    if query.device.type == "cpu" and (query.requires_grad or key.requires_grad or value.requires_grad):
        raise NotImplementedError(
            "iam_flex (FlexAttention) has no backward on CPU in this torch version: train on CPU with "
            'attn_implementation="sdpa" (iam_sdpa), and keep iam_flex for GPUs or for CPU inference '
            "under torch.no_grad()."
        )
    if dropout > 0:
        raise ValueError("iam_flex does not support attention dropout: set the backbone's attention_dropout to 0.")
    if attention_mask is not None and not isinstance(attention_mask, FlexBaseMask):
        raise ValueError(
            f"iam_flex got a {type(attention_mask).__name__} mask; it builds its own masks from the 2D attention_mask "
            "and item_segment_ids (pass those, not a ready 4D mask)."
        )
    segments = kwargs.pop("item_segments", None)
    layer_type = getattr(module, "iam_layer_type", "full")
    if layer_type == "intra" and segments is not None and segments.rows_are_items:
        layer_type, segments = "full", None  # packed items: within one item, intra attention is causal attention
    if layer_type != "full" and (segments is None or segments.rows_are_items):
        raise ValueError(
            f"Layer {getattr(module, 'layer_idx', '?')} is an {layer_type!r} layer and needs "
            "`item_segment_ids` (0 = context, 1..n = history items) in the forward call."
        )
    batch_size, q_length, kv_length = query.shape[0], query.shape[2], key.shape[2]
    if attention_mask is None:
        attention_mask = FlexBaseMask(causal_mask_function, None, batch_size, q_length, kv_length)
    block_mask = block_mask_for(layer_type, attention_mask, segments, q_length, kv_length)

    # As transformers' own flex integration: grouped-query attention natively when the head count is a power
    # of two, repeated key/value heads otherwise.
    enable_gqa = True
    num_heads = query.shape[1]
    if num_heads & (num_heads - 1):
        key = repeat_kv(key, num_heads // key.shape[1])
        value = repeat_kv(value, num_heads // value.shape[1])
        enable_gqa = False
    output = _flex_function(query.device)(
        query, key, value, block_mask=block_mask, scale=scaling, enable_gqa=enable_gqa
    )
    return output.transpose(1, 2).contiguous(), None
