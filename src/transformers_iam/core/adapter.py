"""The recommendation adapter: where the pooled hidden state becomes one score per catalog item, and how its item
embeddings and per-item bias start."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .catalog import ItemCatalog
from .configuration_iam import IAMConfig

# HLLM and CLIP start a learned temperature at 1 / 0.07 and cap it at 100
_INITIAL_LOGIT_SCALE = math.log(1 / 0.07)
_MAX_LOGIT_SCALE = math.log(100.0)


class IAMRecommendationAdapter(nn.Module):
    """Maps the pooled final hidden state to one score per catalog item.

    A projection (dense, GELU, LayerNorm), then one learned embedding per item: scored by dot product
    (``config.adapter_scoring="dot"``) or by cosine similarity times a learned temperature (``"cosine"``); the bias
    is a learned per-item prior (popularity).
    """

    def __init__(self, config: IAMConfig):
        super().__init__()
        adapter_size = config.resolved_adapter_hidden_size
        self.dropout = nn.Dropout(config.adapter_dropout)
        self.dense = nn.Linear(config.text_config.hidden_size, adapter_size)
        self.activation = nn.GELU()
        self.norm = nn.LayerNorm(adapter_size)
        self.item_embeddings = nn.Linear(adapter_size, config.num_items)
        self.scoring = config.adapter_scoring
        if self.scoring == "cosine":
            self.logit_scale = nn.Parameter(torch.tensor(_INITIAL_LOGIT_SCALE))

    def project(self, pooled_hidden_state: torch.Tensor) -> torch.Tensor:
        """The user state in the item embeddings' space."""
        return self.norm(self.activation(self.dense(self.dropout(pooled_hidden_state))))

    def forward(self, pooled_hidden_state: torch.Tensor) -> torch.Tensor:
        projected = self.project(pooled_hidden_state)
        if self.scoring == "dot":
            return self.item_embeddings(projected)
        scale = self.logit_scale.clamp(max=_MAX_LOGIT_SCALE).exp()
        cosine = (
            nn.functional.normalize(projected, dim=-1) @ nn.functional.normalize(self.item_embeddings.weight, dim=-1).T
        )
        return scale * cosine + self.item_embeddings.bias


def log_popularity_prior(item_counts: torch.Tensor | Sequence[float], num_items: int) -> torch.Tensor:
    """The centred log-frequency of each item (counts in catalog order), with add-one smoothing.

    Example:
        >>> log_popularity_prior([0.0, 1.0, 2.0], 3).argsort().tolist()
        [0, 1, 2]
    """
    item_counts = torch.as_tensor(item_counts, dtype=torch.float32).view(-1)
    if item_counts.numel() != num_items:
        raise ValueError(f"item_counts has {item_counts.numel()} entries for {num_items} catalog items")
    if (item_counts < 0).any():
        raise ValueError("item_counts must be non-negative")
    prior = torch.log((item_counts + 1.0) / (item_counts + 1.0).sum())
    return prior - prior.mean()


@torch.no_grad()
def text_item_embeddings(
    backbone: nn.Module,
    adapter: IAMRecommendationAdapter,
    item_token_ids: Sequence[Sequence[int]],
    batch_size: int = 64,
    catalog: ItemCatalog | None = None,
) -> torch.Tensor:
    """Unit-norm item embeddings from the backbone's reading of each item's text alone.

    Each item's tokens are encoded alone, mean-pooled and passed through the adapter's own projection, so a user
    state and an item text meet in one space: items with similar text score alike before any training, and a catalog
    far larger than the training set still gets informed embeddings. Scaled by ``scale`` (the caller's), with the
    adapter's LayerNorm output of norm ``sqrt(hidden)``, initial scores are ``scale * sqrt(hidden) * cosine`` (about
    +-2.4 for hidden 576 and scale 0.1), the spread of a log-popularity prior.
    """
    # an item with no tokens would be a 0/0 mean, and the centring below would spread its NaN to every item
    empty = [index for index, ids in enumerate(item_token_ids) if len(ids) == 0]
    if empty:
        names = catalog.ids_of(empty[:5]) if catalog is not None else empty[:5]
        raise ValueError(
            f"{len(empty)} items have no tokens (catalog indices {empty[:5]}, items {names}): every item "
            "needs at least one token; give them a non-empty text"
        )
    device = adapter.item_embeddings.weight.device
    embeddings = []
    for start in range(0, len(item_token_ids), batch_size):
        chunk = item_token_ids[start : start + batch_size]
        width = max(len(ids) for ids in chunk)
        input_ids = torch.zeros(len(chunk), width, dtype=torch.long, device=device)
        attention_mask = torch.zeros_like(input_ids)
        for row, ids in enumerate(chunk):
            input_ids[row, : len(ids)] = torch.tensor(list(ids), device=device)
            attention_mask[row, : len(ids)] = 1
        # segment 0 everywhere: every layer is plain causal for an item read on its own
        states = backbone(
            input_ids=input_ids, attention_mask=attention_mask, item_segment_ids=torch.zeros_like(input_ids)
        ).last_hidden_state
        pooled = (states * attention_mask[..., None]).sum(1) / attention_mask.sum(1, keepdim=True)
        embeddings.append(adapter.project(pooled))
    embeddings = torch.cat(embeddings)
    embeddings = embeddings - embeddings.mean(0, keepdim=True)
    return embeddings / embeddings.norm(dim=-1, keepdim=True).clamp(min=1e-6)


__all__ = ["IAMRecommendationAdapter", "log_popularity_prior", "text_item_embeddings"]
