"""transformers-iam: item-aware attention (IAM) for LLM recommendation, as a transformers plugin.

Importing the package registers ``IAMConfig`` and ``IAMForCausalRecommendation`` with the
Auto classes and the ``iam_sdpa`` / ``iam_eager`` attention backends with transformers::

    import transformers_iam
    from transformers import AutoModel
    model = AutoModel.from_pretrained("path/or/org/iam-checkpoint")
"""

from transformers import AutoConfig, AutoModel

from .core.attention import IAM_ATTENTION_IMPLEMENTATIONS, enable_item_aware_attention, item_aware_implementation
from .core.catalog import ItemCatalog
from .core.collator import IAMDataCollator
from .core.configuration_iam import IAM_LAYOUTS, IAMConfig, layer_types_for_layout
from .core.masks import LAYER_TYPES, item_aware_mask
from .core.modeling_iam import (
    IAMForCausalRecommendation,
    IAMPreTrainedModel,
    IAMRecommendationOutput,
    IAMRecommendations,
)
from .core.pipeline_item_recommendation import ItemRecommendationPipeline
from .core.ranking import exclude_items

__version__ = "0.1.0"

AutoConfig.register(IAMConfig.model_type, IAMConfig, exist_ok=True)
AutoModel.register(IAMConfig, IAMForCausalRecommendation, exist_ok=True)

__all__ = [
    "IAM_ATTENTION_IMPLEMENTATIONS",
    "IAM_LAYOUTS",
    "LAYER_TYPES",
    "IAMConfig",
    "IAMDataCollator",
    "IAMForCausalRecommendation",
    "IAMPreTrainedModel",
    "IAMRecommendationOutput",
    "IAMRecommendations",
    "ItemCatalog",
    "ItemRecommendationPipeline",
    "enable_item_aware_attention",
    "exclude_items",
    "item_aware_implementation",
    "item_aware_mask",
    "layer_types_for_layout",
]
