"""Where the adapter reads the backbone: which token's state predicts which item.

Two kinds of position (chosen by ``config.supervision``):

- ``"last"``, at the query: the last real token (the end of the query suffix), one per user;
- ``"every_item"``, at item ends: the last token of an item. The state at the end of item ``i`` predicts
  item ``i + 1``, and the state at the end of the last item predicts the target: training and evaluation then read the
  same kind of position. Causal attention keeps item ``i + 1`` (and the target) out of the state read after item ``i``
  in every layout (docs/architecture.md, "Every-item supervision").
"""

from __future__ import annotations

import torch


def last_real_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """The position of the last real token of each row, whatever the padding side.

    Example:
        >>> last_real_positions(torch.tensor([[0, 1, 1], [1, 1, 0]])).tolist()
        [2, 1]
    """
    return attention_mask.shape[1] - 1 - attention_mask.long().flip(-1).argmax(-1)


def item_end_positions(item_segment_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``(batch, max items)``: the position of the last token of item ``j + 1`` in each row, ``-1`` where a row has
    fewer items.

    Example:
        >>> segments = torch.tensor([[0, 1, 1, 2, 0], [0, 0, 1, 1, 0]])
        >>> item_end_positions(segments, torch.ones_like(segments)).tolist()
        [[2, 3], [3, -1]]
    """
    segments = item_segment_ids.long() * attention_mask.long()
    num_items = int(segments.max()) if segments.numel() else 0
    ends = torch.full((segments.shape[0], max(num_items, 1)), -1, dtype=torch.long, device=segments.device)
    following = torch.cat([segments[:, 1:], torch.zeros_like(segments[:, :1])], dim=1)
    is_end = (segments > 0) & (following != segments)
    rows, positions = is_end.nonzero(as_tuple=True)
    ends[rows, segments[rows, positions] - 1] = positions
    return ends


def gather_states(hidden_states: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``hidden_states[b, positions[b, ...]]`` for each row ``b``."""
    rows = torch.arange(hidden_states.shape[0], device=hidden_states.device)
    rows = rows.view(-1, *([1] * (positions.dim() - 1))).expand_as(positions)
    return hidden_states[rows, positions]


__all__ = ["gather_states", "item_end_positions", "last_real_positions"]
