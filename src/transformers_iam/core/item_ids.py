"""Item id embeddings: one learned vector per catalog item, added to the item's states where they enter the first
layer above the leading intra run (``IAMConfig.use_item_id_embeddings``; docs/architecture.md, "Item-level IAM")."""

from __future__ import annotations

import torch
from torch import nn

from .configuration_iam import IAMConfig


class ItemIdEmbeddings(nn.Embedding):
    """One learned vector per catalog item, zero-initialised, so an untrained model is the text-only model and an
    item never trained adds nothing. With ``embedding_size`` the table is that narrow and a shared learned projection
    maps it to ``hidden_size`` (`IAMConfig.item_id_embedding_size`); the rows still start at 0.

    Example:
        >>> table = ItemIdEmbeddings(num_items=5, hidden_size=8, embedding_size=2)
        >>> table(torch.tensor([[0, 4]])).shape
        torch.Size([1, 2, 8])
    """

    def __init__(
        self, num_items: int, hidden_size: int, embedding_size: int | None = None, sparse_gradient: bool = False
    ):
        super().__init__(num_items, embedding_size or hidden_size, sparse=sparse_gradient)
        self.projection = None if embedding_size is None else nn.Linear(embedding_size, hidden_size, bias=False)

    @classmethod
    def from_config(cls, config: IAMConfig, num_items: int) -> ItemIdEmbeddings:
        """The table ``config`` asks for, with ``num_items`` rows (the catalog's, or a grown catalog's)."""
        return cls(
            num_items, config.text_config.hidden_size, config.item_id_embedding_size, config.sparse_item_gradients
        )

    def forward(self, item_indices: torch.Tensor) -> torch.Tensor:
        vectors = super().forward(item_indices)
        return vectors if self.projection is None else self.projection(vectors)

    @torch.no_grad()
    def grown(self, config: IAMConfig, num_items: int) -> ItemIdEmbeddings:
        """This table with zero rows appended up to ``num_items`` (items added after training have no identity)."""
        table = ItemIdEmbeddings.from_config(config, num_items).to(self.weight)
        table.weight.zero_()
        table.weight[: self.num_embeddings] = self.weight
        if self.projection is not None:
            table.projection.weight.copy_(self.projection.weight)
        table.requires_grad_(self.weight.requires_grad)
        return table


__all__ = ["ItemIdEmbeddings"]
