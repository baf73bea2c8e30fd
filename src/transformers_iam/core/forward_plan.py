"""How one forward runs: which path computes the leading intra layers, and what the layers above see.

Every path gives the masked path's states to float rounding (docs/architecture.md, "Compute once, supervise
everywhere"); the plan only decides how much work that takes. It is chosen in one place, :func:`choose_plan`, from
the model's config, its attached item-state cache and the call's inputs.

Example:
    >>> from transformers import LlamaConfig
    >>> from transformers_iam import IAMConfig
    >>> config = IAMConfig(text_config=LlamaConfig(num_hidden_layers=4), num_item_tokens=1)
    >>> plan = choose_plan(config, cache=None, per_item=True, output_hidden_states=False)
    >>> plan.path, plan.num_leading_intra, plan.item_level, plan.runs_backbone_forward
    (<ForwardPath.MASKED: 'masked'>, 2, True, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from .configuration_iam import IAMConfig

if TYPE_CHECKING:
    from .item_cache import ItemStateCache


class ForwardPath(str, Enum):
    """How the leading run of intra layers is computed."""

    MASKED = "masked"  # the whole prompt under the item-aware mask: the reference
    PACKED = "packed"  # each distinct item of the batch as a short sequence of its own, no mask
    CACHED = "cached"  # from the item-state cache (items it lacks are packed)


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


@dataclass(frozen=True)
class ForwardPlan:
    """One forward's plan: the path of the leading intra run and what the layers above it see."""

    path: ForwardPath
    cache: ItemStateCache | None  # with ForwardPath.CACHED
    num_leading_intra: int
    num_item_tokens: int | None  # the layers above see each item through its last states only
    item_ids: bool  # item id vectors are added where items enter the layers above
    read_item_ends: bool  # every-item supervision: nothing reads the context after the last item
    output_hidden_states: bool

    @property
    def item_level(self) -> bool:
        """The layers above differ from the backbone's own forward (fewer states, or id vectors added)."""
        return self.num_item_tokens is not None or self.item_ids

    @property
    def runs_backbone_forward(self) -> bool:
        """The reference: transformers' own forward of the backbone, every layer under its item-aware mask."""
        return self.path is ForwardPath.MASKED and not self.item_level

    @property
    def drop_trailing_context(self) -> bool:
        return self.read_item_ends and not self.output_hidden_states


def choose_plan(
    config: IAMConfig,
    cache: ItemStateCache | None,
    per_item: bool,
    output_hidden_states: bool,
    path: ForwardPath | str | None = None,
) -> ForwardPlan:
    """The plan of one forward.

    Args:
        cache: the item-state cache to read (the model's attached one, or one being checked), if any.
        per_item: the call has what the per-item paths need (token ids, item segment ids and a leading intra run);
            without it every path is the masked one.
        path: ``None`` lets the model choose (the cache when one is given and no hidden states are asked for, then
            ``config.intra_implementation``); ``"masked"`` or ``"packed"`` bypass the cache; ``"cached"`` needs one.
    """
    path = None if path is None else ForwardPath(path)
    if path is ForwardPath.CACHED and cache is None:
        raise ValueError("path='cached' but no item-state cache is attached (model.enable_item_cache)")
    if path in (ForwardPath.MASKED, ForwardPath.PACKED):
        cache = None
    if not per_item:
        path, cache = ForwardPath.MASKED, None
    elif cache is not None and output_hidden_states:
        path, cache = ForwardPath.PACKED, None  # the cache holds only the run's last states: every layer's, packed
    elif cache is not None:
        path = ForwardPath.CACHED
    elif path is None:
        path = ForwardPath(config.intra_implementation)
    return ForwardPlan(
        path=path,
        cache=cache,
        num_leading_intra=leading_intra_layers(config.resolved_layer_types),
        num_item_tokens=config.num_item_tokens,
        item_ids=config.use_item_id_embeddings,
        read_item_ends=config.supervision == "every_item",
        output_hidden_states=output_hidden_states,
    )


__all__ = ["ForwardPath", "ForwardPlan", "choose_plan", "leading_intra_layers"]
