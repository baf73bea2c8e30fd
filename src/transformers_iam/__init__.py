"""transformers-iam: item-aware attention (IAM) for LLM recommendation, as a transformers plugin.

Importing the package registers ``IAMConfig`` and ``IAMForCausalRecommendation`` with the
Auto classes, the ``iam_sdpa`` / ``iam_eager`` attention backends with transformers, and the
``item-recommendation`` pipeline::

    import transformers_iam
    from transformers import AutoModel
    model = AutoModel.from_pretrained("path/or/org/iam-checkpoint")

The public API below is what a user of the model needs; the recommender harness, the
integrations and the experiments are imported by module path (``transformers_iam.recsys.metrics``,
``transformers_iam.integrations.peft``, ...): see docs/architecture.md.
"""

from transformers import AutoConfig, AutoModel

from .core.attention import enable_item_aware_attention
from .core.catalog import ItemCatalog
from .core.collator import IAMDataCollator
from .core.configuration_iam import IAM_LAYOUTS, IAMConfig
from .core.modeling_iam import (
    IAMForCausalRecommendation,
    IAMPreTrainedModel,
    IAMRecommendationOutput,
    IAMRecommendations,
)
from .core.optimization import LazyAdamW
from .core.pipeline_item_recommendation import ItemRecommendationPipeline

__version__ = "0.1.0"

AutoConfig.register(IAMConfig.model_type, IAMConfig, exist_ok=True)
AutoModel.register(IAMConfig, IAMForCausalRecommendation, exist_ok=True)

__all__ = [
    "IAM_LAYOUTS",
    "IAMConfig",
    "IAMDataCollator",
    "IAMForCausalRecommendation",
    "IAMPreTrainedModel",
    "IAMRecommendationOutput",
    "IAMRecommendations",
    "ItemCatalog",
    "ItemRecommendationPipeline",
    "LazyAdamW",
    "enable_item_aware_attention",
]
