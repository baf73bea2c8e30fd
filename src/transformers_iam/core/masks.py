"""Item-aware attention masks: where item segment ids become attention patterns.

Every token carries a segment id: ``0`` for context (prompt, query suffix, padding) and
``1..n`` for the n history items. With ``q`` a query position, ``k`` a key position and
``causal = k <= q``, the three layer kinds are (docs/architecture.md, "Mask semantics"):

- ``full``  : causal
- ``intra`` : causal and ``seg(q) == seg(k)``
- ``inter`` : causal and (``seg(q) != seg(k)`` or ``q == k`` or ``seg(q) == 0``)

Padding is not handled here: the backbone's own mask (padding, sliding window, cache
offsets) is combined with these patterns in :mod:`transformers_iam.attention`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

LAYER_TYPES = ("intra", "inter", "full")


def check_layer_types(layer_types: Sequence[str], num_layers: int | None = None) -> list[str]:
    """The one validation of per-layer kinds, used by the config and by :func:`enable_item_aware_attention`.

    Example:
        >>> check_layer_types(["intra", "inter"], num_layers=2)
        ['intra', 'inter']
        >>> check_layer_types(["intra", "cross"])
        Traceback (most recent call last):
        ...
        ValueError: iam_layer_types[1] = 'cross'; allowed values: ['intra', 'inter', 'full']
    """
    if isinstance(layer_types, str) or not isinstance(layer_types, Sequence):
        raise ValueError(f"iam_layer_types must be a list of layer kinds, got {layer_types!r}")
    layer_types = list(layer_types)
    for index, layer_type in enumerate(layer_types):
        if layer_type not in LAYER_TYPES:
            raise ValueError(f"iam_layer_types[{index}] = {layer_type!r}; allowed values: {list(LAYER_TYPES)}")
    if num_layers is not None and len(layer_types) != num_layers:
        raise ValueError(
            f"iam_layer_types has {len(layer_types)} entries but the backbone has {num_layers} layers "
            "(text_config.num_hidden_layers)"
        )
    return layer_types


def item_aware_mask(item_segment_ids: torch.Tensor, layer_type: str, q_length: int | None = None) -> torch.Tensor:
    """Boolean mask ``(batch, 1, q_length, kv_length)``, ``True`` where attention is allowed.

    ``item_segment_ids`` covers every key position (past and present tokens), shape
    ``(batch, kv_length)``; the queries are the last ``q_length`` positions (all of them
    by default), which is what a decoding step with a KV cache needs.

    Example:
        >>> seg = torch.tensor([[0, 1, 1, 2, 2, 0]])
        >>> item_aware_mask(seg, "intra")[0, 0, 2].tolist()
        [False, True, True, False, False, False]
        >>> item_aware_mask(seg, "inter")[0, 0, 4].tolist()
        [True, True, True, False, True, False]
    """
    if layer_type not in LAYER_TYPES:
        raise ValueError(f"layer_type must be one of {LAYER_TYPES}, got {layer_type!r}")
    if item_segment_ids.dim() != 2:
        raise ValueError(
            f"item_segment_ids must have shape (batch, sequence_length), got {tuple(item_segment_ids.shape)}"
        )
    kv_length = item_segment_ids.shape[1]
    q_length = kv_length if q_length is None else q_length
    device = item_segment_ids.device
    q_positions = torch.arange(kv_length - q_length, kv_length, device=device)
    k_positions = torch.arange(kv_length, device=device)
    causal = k_positions[None, :] <= q_positions[:, None]  # (q, kv)
    if layer_type == "full":
        return causal[None, None].expand(item_segment_ids.shape[0], 1, q_length, kv_length)

    seg_q = item_segment_ids[:, kv_length - q_length :, None]  # (batch, q, 1)
    seg_k = item_segment_ids[:, None, :]  # (batch, 1, kv)
    same_item = seg_q == seg_k
    if layer_type == "intra":
        allowed = same_item
    else:
        is_self = (k_positions[None, :] == q_positions[:, None])[None]
        allowed = ~same_item | is_self | (seg_q == 0)
    return (allowed & causal[None])[:, None]


def ensure_no_empty_rows(mask: torch.Tensor) -> torch.Tensor:
    """Let a query that may see nothing see itself.

    Such rows only occur for padding queries (a padding token is masked as a key, so a
    left-padding token under an ``intra`` mask sees nothing). SDPA returns zeros for an
    empty row and eager returns uniform attention over all keys: both are silent bugs the
    moment a padded state is read. Opening the diagonal keeps every row well defined
    without changing any non-padding token.
    """
    empty = ~mask.any(dim=-1, keepdim=True)
    if not bool(empty.any()):
        return mask
    q_length, kv_length = mask.shape[-2:]
    diagonal = (
        torch.arange(kv_length, device=mask.device)[None, :]
        == (torch.arange(kv_length - q_length, kv_length, device=mask.device)[:, None])
    )
    return mask | (empty & diagonal)
