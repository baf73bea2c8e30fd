"""The checks on a forward's inputs whose failure would otherwise be silent or name nothing, made the same way for
every path (masked, packed, cached, flex), and the position ids every path uses."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .configuration_iam import IAMConfig


def default_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only, so a user's states do not depend on how much padding precedes them.

    Example:
        >>> default_position_ids(torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])).tolist()
        [[0, 0, 0, 1, 2], [0, 1, 2, 3, 3]]
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _noncontiguous_rows(segments: torch.Tensor) -> torch.Tensor:
    """Per row: an item segment id occurs in more than one run (the item is split), with no host sync."""
    previous = torch.nn.functional.pad(segments[:, :-1], (1, 0))
    runs = ((segments > 0) & (segments != previous)).sum(-1)
    ordered = segments.sort(-1).values
    distinct = ((ordered > 0) & (ordered != torch.nn.functional.pad(ordered[:, :-1], (1, 0)))).sum(-1)
    return runs > distinct


def check_forward_inputs(
    config: IAMConfig,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    item_segment_ids: torch.Tensor | None,
    segment_item_indices: torch.Tensor | None = None,
) -> None:
    """Refuse what every path would otherwise treat differently or silently: out-of-vocabulary ids, all-padding rows,
    negative or non-contiguous item segments, item indices outside the catalog. The value checks are gathered into
    one tensor and read back once (one host sync per forward, not one per check); messages are built only on failure.
    """
    _check_shapes(config, input_ids, inputs_embeds, attention_mask, item_segment_ids, segment_item_indices)
    flags = _value_flags(config, input_ids, attention_mask, item_segment_ids, segment_item_indices)
    failed = dict(zip(flags, torch.stack(list(flags.values())).tolist()))
    if any(failed.values()):
        raise ValueError(
            _value_error(config, failed, input_ids, attention_mask, item_segment_ids, segment_item_indices)
        )


def _check_shapes(
    config: IAMConfig,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    item_segment_ids: torch.Tensor | None,
    segment_item_indices: torch.Tensor | None,
) -> None:
    """What is missing or of the wrong shape (no tensor is read)."""
    reference = input_ids if input_ids is not None else inputs_embeds
    if reference is None:
        raise ValueError("Pass input_ids or inputs_embeds")
    shape = tuple(reference.shape[:2])
    if item_segment_ids is None and any(kind != "full" for kind in config.resolved_layer_types):
        raise ValueError(
            "item_segment_ids is required: this model has item-aware layers "
            f"({config.resolved_layer_types}). IAMDataCollator emits it."
        )
    for name, tensor in (("item_segment_ids", item_segment_ids), ("attention_mask", attention_mask)):
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)} but the inputs have {shape}")
    if config.use_item_id_embeddings and segment_item_indices is None:
        raise ValueError(
            "this model adds item id embeddings (config.use_item_id_embeddings): pass segment_item_indices, the "
            "catalog index of each history item (IAMDataCollator emits it)"
        )
    if segment_item_indices is not None and (
        segment_item_indices.dim() != 2 or segment_item_indices.shape[0] != shape[0]
    ):
        raise ValueError(
            f"segment_item_indices must have shape (batch, items) with batch {shape[0]}, got "
            f"{tuple(segment_item_indices.shape)}"
        )


def _segments(item_segment_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    real = attention_mask.long() if attention_mask is not None else torch.ones_like(item_segment_ids)
    return item_segment_ids.long() * real


def _value_flags(
    config: IAMConfig,
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    item_segment_ids: torch.Tensor | None,
    segment_item_indices: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """One boolean tensor per check, computed on the inputs' device without reading any of them back."""
    device = input_ids if input_ids is not None else attention_mask if attention_mask is not None else None
    device = device.device if device is not None else None
    false = torch.zeros((), dtype=torch.bool, device=device)
    vocab_size = getattr(config.text_config, "vocab_size", None)
    has_ids = input_ids is not None and input_ids.numel() > 0
    flags = {
        "ids_low": (input_ids.min() < 0) if has_ids else false,
        "ids_high": (input_ids.max() >= vocab_size) if has_ids and vocab_size is not None else false,
        "empty_rows": (attention_mask == 0).all(-1).any() if attention_mask is not None else false,
        "negative_segments": (item_segment_ids < 0).any() if item_segment_ids is not None else false,
        "noncontiguous": false,
        "segments_beyond_indices": false,
        "indices_outside": false,
        "unindexed_items": false,
    }
    if item_segment_ids is None or not item_segment_ids.numel():
        return flags
    segments = _segments(item_segment_ids, attention_mask).to(false.device)
    flags["noncontiguous"] = _noncontiguous_rows(segments).any()
    if segment_item_indices is not None:
        indices = segment_item_indices.to(false.device)
        flags["segments_beyond_indices"] = segments.max() > indices.shape[1]
        flags["indices_outside"] = ((indices >= 0) & (indices >= config.num_items)).any() | (indices < -1).any()
        if indices.shape[1]:
            columns = (segments - 1).clamp(0, indices.shape[1] - 1)
            flags["unindexed_items"] = ((segments > 0) & (indices.gather(1, columns) < 0)).any()
    return flags


def _value_error(
    config: IAMConfig,
    failed: dict[str, bool],
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    item_segment_ids: torch.Tensor | None,
    segment_item_indices: torch.Tensor | None,
) -> str:
    """The message of the first failed check, naming the values at fault."""
    if failed["ids_low"] or failed["ids_high"]:
        vocab_size = getattr(config.text_config, "vocab_size", None)
        low, high = int(input_ids.min()), int(input_ids.max())
        return f"input_ids must be token ids in [0, {vocab_size}) (text_config.vocab_size), got [{low}, {high}]"
    if failed["empty_rows"]:
        empty = (attention_mask == 0).all(-1)
        return (
            f"attention_mask rows {empty.nonzero().view(-1).tolist()[:5]} are all padding: every row needs at "
            "least its query token (the adapter reads the last real token)"
        )
    if failed["negative_segments"]:
        return "item_segment_ids must be >= 0 (0 = context, 1..n = history items)"
    segments = _segments(item_segment_ids, attention_mask)
    if failed["noncontiguous"]:
        row = int(_noncontiguous_rows(segments).nonzero()[0, 0])
        return (
            f"row {row}: an item segment is not contiguous (item_segment_ids {segments[row].tolist()}): every item "
            "must be one span of tokens"
        )
    if failed["segments_beyond_indices"]:
        return (
            f"item_segment_ids go up to {int(segments.max())} but segment_item_indices has "
            f"{segment_item_indices.shape[1]} columns: one catalog index per item segment"
        )
    if failed["unindexed_items"] and not failed["indices_outside"]:
        return (
            "an item segment has no catalog index in segment_item_indices (-1): every history item needs its "
            "catalog index for its item id embedding"
        )
    bad = segment_item_indices[(segment_item_indices < -1) | (segment_item_indices >= config.num_items)]
    return (
        f"segment_item_indices must be catalog indices in [0, {config.num_items}) or -1 (padding), got "
        f"{bad.tolist()[:5]}"
    )


@dataclass
class BackboneInputs:
    """A forward's inputs after :func:`check_forward_inputs`, with the attention mask and position ids every path
    uses (all ones, and positions counting real tokens, when not given)."""

    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    input_ids: torch.Tensor | None = None
    inputs_embeds: torch.Tensor | None = None
    item_segment_ids: torch.Tensor | None = None
    segment_item_indices: torch.Tensor | None = None

    @classmethod
    def checked(
        cls,
        config: IAMConfig,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        item_segment_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        segment_item_indices: torch.Tensor | None = None,
    ) -> BackboneInputs:
        """Check the inputs for ``config``'s model and fill in the mask and positions."""
        check_forward_inputs(config, input_ids, inputs_embeds, attention_mask, item_segment_ids, segment_item_indices)
        reference = input_ids if input_ids is not None else inputs_embeds
        if attention_mask is None:
            attention_mask = torch.ones(reference.shape[:2], dtype=torch.long, device=reference.device)
        if position_ids is None:
            position_ids = default_position_ids(attention_mask)
        return cls(attention_mask, position_ids, input_ids, inputs_embeds, item_segment_ids, segment_item_indices)


# what recommend passes on to forward besides its own arguments, and the collator's fields it takes and ignores (so
# that ``model.recommend(**batch)`` works); anything else is refused
RECOMMEND_FORWARD_ARGUMENTS = frozenset({"segment_item_indices", "position_ids", "inputs_embeds", "path"})
RECOMMEND_IGNORED_ARGUMENTS = frozenset({"labels", "history_item_indices"})


def recommend_forward_arguments(kwargs: dict) -> dict:
    """``recommend``'s keyword arguments that go to the forward; a misspelt one (an exclusion argument under another
    name) is a ``TypeError`` rather than dropped without a word."""
    unknown = sorted(set(kwargs) - RECOMMEND_FORWARD_ARGUMENTS - RECOMMEND_IGNORED_ARGUMENTS)
    if unknown:
        raise TypeError(
            f"recommend() got unexpected keyword arguments {unknown}; it takes input_ids, attention_mask, "
            f"item_segment_ids, k, exclude_item_ids and {sorted(RECOMMEND_FORWARD_ARGUMENTS)}"
        )
    return {name: value for name, value in kwargs.items() if name not in RECOMMEND_IGNORED_ARGUMENTS}


def _is_integer_tensor(tensor: torch.Tensor) -> bool:
    return not (tensor.dtype == torch.bool or tensor.dtype.is_floating_point or tensor.is_complex())


def _token_shape(input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None) -> tuple[int, int]:
    """``[batch, tokens]`` of ``recommend``'s token inputs, after checking their type and rank."""
    if input_ids is None:
        if not isinstance(inputs_embeds, torch.Tensor) or inputs_embeds.dim() != 3:
            raise ValueError(
                "recommend needs input_ids, a 2-D integer tensor [batch, tokens] (the collator's input_ids), or "
                "inputs_embeds, a 3-D tensor [batch, tokens, hidden]"
            )
        shape = tuple(inputs_embeds.shape[:2])
    else:
        if not isinstance(input_ids, torch.Tensor):
            raise ValueError(
                f"input_ids must be a 2-D integer tensor [batch, tokens] (the collator's input_ids), got "
                f"{type(input_ids).__name__}: for one user's token ids pass torch.tensor([ids])"
            )
        if not _is_integer_tensor(input_ids):
            raise ValueError(f"input_ids must hold integer token ids, got a {input_ids.dtype} tensor")
        if input_ids.dim() != 2:
            hint = ": for one user pass input_ids[None]" if input_ids.dim() == 1 else ""
            raise ValueError(f"input_ids must be 2-D [batch, tokens], got shape {tuple(input_ids.shape)}{hint}")
        shape = tuple(input_ids.shape)
    if 0 in shape:
        raise ValueError(f"input_ids must hold at least one user and one token, got shape {shape}")
    return shape


def _check_segment_item_indices(segment_item_indices, batch_size: int) -> None:
    if segment_item_indices is None:
        return
    if (
        not isinstance(segment_item_indices, torch.Tensor)
        or not _is_integer_tensor(segment_item_indices)
        or segment_item_indices.dim() != 2
        or segment_item_indices.shape[0] != batch_size
    ):
        described = (
            f"a {segment_item_indices.dtype} tensor of shape {tuple(segment_item_indices.shape)}"
            if isinstance(segment_item_indices, torch.Tensor)
            else type(segment_item_indices).__name__
        )
        raise ValueError(
            f"segment_item_indices must be a 2-D integer tensor [batch, items] with batch {batch_size} (the "
            f"collator's segment_item_indices), got {described}"
        )


def check_recommend_inputs(
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    item_segment_ids: torch.Tensor | None,
    kwargs: dict,
) -> int:
    """The batch size of ``recommend``'s inputs, after checking their types and shapes (the forward checks their
    values): what a 1-D tensor or a list would otherwise hit deep inside the backbone, as an error naming nothing.

    Example:
        >>> check_recommend_inputs(torch.tensor([5, 6, 7]), None, None, {})
        Traceback (most recent call last):
        ...
        ValueError: input_ids must be 2-D [batch, tokens], got shape (3,): for one user pass input_ids[None]
    """
    shape = _token_shape(input_ids, kwargs.get("inputs_embeds"))
    for name, tensor in (
        ("attention_mask", attention_mask),
        ("item_segment_ids", item_segment_ids),
        ("position_ids", kwargs.get("position_ids")),
    ):
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{name} must be a tensor of shape {shape} (as input_ids), got {type(tensor).__name__}")
        if not _is_integer_tensor(tensor) and not (name == "attention_mask" and tensor.dtype == torch.bool):
            raise ValueError(f"{name} must be an integer tensor, got {tensor.dtype}")
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have the shape of input_ids {shape}, got {tuple(tensor.shape)}")
    # other values would count as tokens in the positions (the mask is summed) but as padding elsewhere
    if attention_mask is not None:
        other = (attention_mask != 0) & (attention_mask != 1)
        if bool(other.any()):
            raise ValueError(
                f"attention_mask must hold 0 (padding) or 1 (token), got {attention_mask[other].unique().tolist()[:5]}"
            )
    _check_segment_item_indices(kwargs.get("segment_item_indices"), shape[0])
    return shape[0]


__all__ = [
    "BackboneInputs",
    "check_forward_inputs",
    "check_recommend_inputs",
    "default_position_ids",
    "recommend_forward_arguments",
]
