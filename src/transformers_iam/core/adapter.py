"""The recommendation adapter: where the pooled hidden state becomes one score per catalog item, and how its item
embeddings and per-item bias start."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers.utils.logging import tqdm

from .attention import ItemSegments
from .catalog import ItemCatalog
from .configuration_iam import IAMConfig
from .decoder import DecoderParts, decoder_parts, eval_mode, run_layers
from .item_states import encode_item_batches
from .sparse_rows import gather_rows


class TextToItemRows(nn.Linear):
    """Maps items' text features to their (embedding, bias) rows: a LayerNorm of the features, then this linear map,
    zero-initialised so that a fresh model's rows are the items' own (``config.item_rows_from_text``)."""

    def __init__(self, num_features: int, adapter_size: int):
        super().__init__(num_features, adapter_size + 1)
        self.feature_norm = nn.LayerNorm(num_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(self.feature_norm(features))


class IAMRecommendationAdapter(nn.Module):
    """Maps the pooled final hidden state to one score per catalog item.

    A projection (dense, GELU, LayerNorm), then one embedding per item, scored by dot product, plus a per-item bias
    (a prior such as popularity). By default both are learned rows of their own (``item_embeddings``). With
    ``config.item_rows_from_text`` each item's (embedding, bias) is ``text_to_rows`` of its text features
    (``item_text_features``) plus its own row as a residual; ``item_rows`` gives the rows either way, and every
    reader of the rows (scoring, ranking in chunks, the item index) goes through it.
    """

    def __init__(self, config: IAMConfig):
        super().__init__()
        adapter_size = config.resolved_adapter_hidden_size
        self.dense = nn.Linear(config.text_config.hidden_size, adapter_size)
        self.activation = nn.GELU()
        self.norm = nn.LayerNorm(adapter_size)
        self.item_embeddings = nn.Linear(adapter_size, config.num_items)
        self.sparse_gradient = config.sparse_item_gradients
        self.text_to_rows: TextToItemRows | None = None
        if config.item_rows_from_text:
            features = 2 * config.text_config.hidden_size  # mean and last state of the item's text
            self.register_buffer("item_text_features", torch.zeros(config.num_items, features))
            self.text_to_rows = TextToItemRows(features, adapter_size)

    def project(self, pooled_hidden_state: torch.Tensor) -> torch.Tensor:
        """The user state in the item embeddings' space."""
        return self.norm(self.activation(self.dense(pooled_hidden_state)))

    def item_rows(
        self, indices: torch.Tensor | None = None, keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embeddings, bias)`` of the items at ``indices`` (all by default), ``(n, adapter_hidden)`` and ``(n,)``.

        ``keep`` (``(num_items,)`` bool, training with ``config.new_item_dropout``): the items that keep their
        residual; the others are scored from their text alone, as an item added after training is.

        Example:
            >>> weight, bias = model.adapter.item_rows()
            >>> torch.equal(weight, model.adapter.item_embeddings.weight)  # no text map: the rows themselves
            True
        """
        weight, bias = self.item_embeddings.weight, self.item_embeddings.bias
        if indices is not None:
            weight = gather_rows(weight, indices, self.sparse_gradient)
            bias = gather_rows(bias, indices, self.sparse_gradient)
        if self.text_to_rows is None:
            return weight, bias
        if keep is not None:
            kept = keep if indices is None else keep[indices]
            weight, bias = weight * kept[:, None].to(weight.dtype), bias * kept.to(bias.dtype)
        features = self.item_text_features if indices is None else self.item_text_features[indices]
        from_text = self.text_to_rows(features.to(weight.dtype))
        return from_text[:, :-1] + weight, from_text[:, -1] + bias

    def forward(self, pooled_hidden_state: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        weight, bias = self.item_rows(keep=keep)
        return nn.functional.linear(self.project(pooled_hidden_state), weight, bias)


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


def check_item_texts(item_token_ids: Sequence[Sequence[int]], catalog: ItemCatalog | None = None) -> None:
    """Refuses items that cannot be read from text: none at all, or an item with no tokens (its row would be a 0/0
    mean, and the centring would spread its NaN to every item), named by catalog index and id."""
    if not item_token_ids:
        raise ValueError("no items to read: item_token_ids is empty")
    empty = [index for index, ids in enumerate(item_token_ids) if len(ids) == 0]
    if empty:
        names = catalog.ids_of(empty[:5]) if catalog is not None else empty[:5]
        raise ValueError(
            f"{len(empty)} items have no tokens (catalog indices {empty[:5]}, items {names}): every item "
            "needs at least one token; give them a non-empty text"
        )


class TextRowsReader:
    """Item rows read from text, batch by batch: a batch of items read alone (``tokens``, ``-1`` padded, and their
    ``states`` after the first ``start_layer`` layers) runs the remaining layers as plain causal attention and the final
    norm, is mean-pooled over each item's tokens and projected by the adapter. A pass over the items that computes
    something else from the same lower layers (the item-state cache) calls it on each of its batches, so the items are
    read once; :meth:`rows` then centres and normalises what was read (see :func:`text_item_embeddings`)."""

    def __init__(self, parts: DecoderParts, adapter: IAMRecommendationAdapter, num_items: int, start_layer: int = 0):
        self.parts, self.adapter, self.start_layer = parts, adapter, start_layer
        self.read = torch.zeros(num_items, dtype=torch.bool)
        self.projected: torch.Tensor | None = None

    @torch.no_grad()
    def __call__(self, indices: Sequence[int], tokens: torch.Tensor, states: torch.Tensor) -> None:
        real = tokens >= 0
        positions = torch.arange(tokens.shape[1], device=tokens.device).expand(tokens.shape[0], -1)
        # segment 0 everywhere: every layer is plain causal for an item read on its own
        final = run_layers(
            self.parts,
            states,
            self.start_layer,
            self.parts.num_layers,
            real.long(),
            positions,
            ItemSegments(torch.zeros_like(tokens)),
            apply_norm=True,
        )
        weights = real[..., None].to(final.dtype)
        with eval_mode(self.adapter):
            projected = self.adapter.project((final * weights).sum(1) / weights.sum(1))
        if self.projected is None:
            self.projected = projected.new_empty((len(self.read), projected.shape[-1]))
        rows = torch.as_tensor(list(indices), device=projected.device)
        self.projected[rows] = projected
        self.read[rows.cpu()] = True

    def rows(self, entries: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-norm rows, centred over the items; ``entries``: each catalog item's index among the items read (when
        the pass read each distinct text once)."""
        if self.projected is None or not bool(self.read.all()):
            raise ValueError(f"rows from text: {int((~self.read).sum())} of {len(self.read)} items were not read")
        embeddings = self.projected if entries is None else self.projected[entries.to(self.projected.device)]
        embeddings = embeddings - embeddings.mean(0, keepdim=True)
        return embeddings / embeddings.norm(dim=-1, keepdim=True).clamp(min=1e-6)


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
    +-2.4 for hidden 576 and scale 0.1), the spread of a log-popularity prior. Read shortest first (a batch pads to its
    longest item), under a progress bar.
    """
    check_item_texts(item_token_ids, catalog)
    parts = decoder_parts(backbone)
    reader = TextRowsReader(parts, adapter, len(item_token_ids))
    with tqdm(total=len(item_token_ids), desc="item rows from text", unit="item") as bar:
        for indices, tokens, states in encode_item_batches(parts, item_token_ids, 0, batch_size):
            reader(indices, tokens, states)
            bar.update(len(indices))
    return reader.rows()


def _standardise(features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    mean, std = reference.mean(0, keepdim=True), reference.std(0, keepdim=True).clamp(min=1e-6)
    return (features - mean) / std


def ridge_fit(features: torch.Tensor, targets: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(coefficients, intercept)`` of the ridge regression of ``targets`` on standardised ``features`` (float64)."""
    x, y = features.double(), targets.double()
    x = _standardise(x, x)
    y_mean = y.mean(0, keepdim=True)
    gram = x.T @ x + ridge * x.shape[0] * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return torch.linalg.solve(gram, x.T @ (y - y_mean)), y_mean


def rows_from_text(
    known_features: torch.Tensor,
    known_rows: torch.Tensor,
    new_features: torch.Tensor,
    ridges: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0, 10.0),
    folds: int = 5,
    seed: int = 0,
) -> tuple[torch.Tensor, float]:
    """Rows for new items predicted from their text features by a ridge regression fitted on the known items
    (text features -> trained rows), its strength chosen by ``folds``-fold cross-validation over the known items.
    Returns the new rows and the chosen strength.

    This is how a trained model scores items it never saw: in the space its training built, at the place their
    text says (an item's text maps to where items with such texts ended up), rather than at an untrained row.

    Example:
        >>> known = torch.randn(50, 4); rows = known @ torch.randn(4, 3)
        >>> new_rows, ridge = rows_from_text(known, rows, known[:2])
        >>> torch.allclose(new_rows, rows[:2], atol=0.1)
        True
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(known_features.shape[0], generator=generator)
    best, best_error = ridges[0], float("inf")
    for ridge in ridges:
        error = 0.0
        for fold in range(folds):
            held = order[fold::folds]
            kept = torch.ones(known_features.shape[0], dtype=torch.bool)
            kept[held] = False
            coefficients, intercept = ridge_fit(known_features[kept], known_rows[kept], ridge)
            x = _standardise(known_features[held].double(), known_features[kept].double())
            error += float(((x @ coefficients + intercept - known_rows[held].double()) ** 2).sum())
        if error < best_error:
            best, best_error = ridge, error
    coefficients, intercept = ridge_fit(known_features, known_rows, best)
    x = _standardise(new_features.double(), known_features.double())
    return (x @ coefficients + intercept).to(known_rows.dtype), best


__all__ = [
    "IAMRecommendationAdapter",
    "TextToItemRows",
    "log_popularity_prior",
    "ridge_fit",
    "rows_from_text",
    "text_item_embeddings",
]
