"""LoRA for IAM through PEFT: low-rank updates on the backbone, the recommendation adapter trained in full."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

# The attention and MLP projections of Llama, Qwen2, Mistral and most decoders transformers ships.
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_config(
    rank: int = 16,
    alpha: int | None = None,
    dropout: float = 0.05,
    target_modules: Sequence[str] = DEFAULT_LORA_TARGETS,
    modules_to_save: Sequence[str] = ("adapter",),
):
    """A `peft.LoraConfig` for IAM: LoRA on `target_modules`; `modules_to_save` (the scoring head, and the item id
    embeddings where a model has them: see `apply_lora`) trained in full."""
    from peft import LoraConfig

    return LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        modules_to_save=list(modules_to_save),
    )


def apply_lora(model: nn.Module, rank: int = 16, **kwargs):
    """Wrap an [`IAMForCausalRecommendation`] in a `peft.PeftModel`.

    Example:
        >>> import os
        >>> peft_model = apply_lora(model, rank=8)
        >>> peft_model.print_trainable_parameters()
        trainable params: 18,164 || all params: 62,216 || trainable%: 29.1951
        >>> peft_model.save_pretrained(os.path.join(tmp, "iam-lora"))
        >>> from peft import PeftModel
        >>> from transformers import AutoModel
        >>> base_model = AutoModel.from_pretrained(checkpoint)  # the IAM model the LoRA weights were trained on
        >>> type(PeftModel.from_pretrained(base_model, os.path.join(tmp, "iam-lora")).merge_and_unload()).__name__
        'IAMForCausalRecommendation'
    """
    from peft import get_peft_model

    # the item id vectors are new weights with no pretrained value to adapt: trained in full,
    # as the adapter is; left out, PEFT would freeze them at their zero initialisation
    has_item_ids = getattr(model, "item_id_embeddings", None) is not None
    kwargs.setdefault("modules_to_save", ("adapter", "item_id_embeddings") if has_item_ids else ("adapter",))
    return get_peft_model(model, lora_config(rank=rank, **kwargs))
