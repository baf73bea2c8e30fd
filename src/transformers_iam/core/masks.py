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

import torch

LAYER_TYPES = ("intra", "inter", "full")


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
