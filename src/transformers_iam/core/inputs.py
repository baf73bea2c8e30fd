"""The checks on a forward's inputs whose failure would otherwise be silent or name nothing."""

from __future__ import annotations

import torch

from .configuration_iam import IAMConfig


def check_forward_inputs(
    config: IAMConfig,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    item_segment_ids: torch.Tensor | None,
) -> None:
    """The checks whose failure would otherwise be silent (an all-padding row is pooled from a padding token) or an
    error that names nothing (an index error deep in the embedding)."""
    reference = input_ids if input_ids is not None else inputs_embeds
    if reference is None:
        raise ValueError("Pass input_ids or inputs_embeds")
    if item_segment_ids is None and any(kind != "full" for kind in config.resolved_layer_types):
        raise ValueError(
            "item_segment_ids is required: this model has item-aware layers "
            f"({config.resolved_layer_types}). IAMDataCollator emits it."
        )
    if item_segment_ids is not None and item_segment_ids.shape != reference.shape[:2]:
        raise ValueError(
            f"item_segment_ids has shape {tuple(item_segment_ids.shape)} "
            f"but the inputs have {tuple(reference.shape[:2])}"
        )
    if input_ids is not None and input_ids.numel():
        vocab_size = getattr(config.text_config, "vocab_size", None)
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or (vocab_size is not None and high >= vocab_size):
            raise ValueError(
                f"input_ids must be token ids in [0, {vocab_size}) (text_config.vocab_size), got [{low}, {high}]"
            )
    if attention_mask is not None:
        if attention_mask.shape != reference.shape[:2]:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} "
                f"but the inputs have {tuple(reference.shape[:2])}"
            )
        empty = (attention_mask == 0).all(-1)
        if bool(empty.any()):
            raise ValueError(
                f"attention_mask rows {empty.nonzero().view(-1).tolist()[:5]} are all padding: every row needs at "
                "least its query token (the adapter reads the last real token)"
            )
    if item_segment_ids is not None and item_segment_ids.numel() and int(item_segment_ids.min()) < 0:
        raise ValueError("item_segment_ids must be >= 0 (0 = context, 1..n = history items)")


__all__ = ["check_forward_inputs"]
