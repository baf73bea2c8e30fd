"""The catalog's lifecycle on a model: binding it, starting its rows from the items' text and popularity, and adding
items after training (docs/architecture.md, "Cold items and the long tail"; docs/reliability.md, "Catalog binding")."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from transformers.utils import logging

from .adapter import log_popularity_prior, rows_from_text, text_item_embeddings
from .catalog import ItemCatalog, check_catalog_binding, item_token_sequences
from .decoder import decoder_parts, eval_mode
from .item_states import encode_item_sequences, item_text_features
from .losses import sampling_log_frequency

logger = logging.get_logger(__name__)


def _grown_linear(linear: nn.Linear, new_weight: torch.Tensor, new_bias: torch.Tensor) -> nn.Linear:
    """``linear`` with output rows appended (same device, dtype and gradient setting)."""
    grown = nn.Linear(linear.in_features, linear.out_features + new_weight.shape[0]).to(linear.weight)
    grown.weight.data = torch.cat([linear.weight.detach(), new_weight.to(linear.weight)])
    grown.bias.data = torch.cat([linear.bias.detach(), new_bias.to(linear.bias)])
    grown.requires_grad_(linear.weight.requires_grad)
    return grown


class CatalogMixin:
    """The catalog of an [`IAMForCausalRecommendation`]: ``set_catalog``, the initialisations of its rows from data
    (``init_item_prior``, ``init_item_embeddings_from_text``, ``init_item_text_features``) and ``add_items``."""

    catalog: ItemCatalog | None

    def set_catalog(self, catalog: ItemCatalog) -> None:
        """Attach the catalog whose order the adapter's scores follow, and record its fingerprint in the config.

        A model whose config already records a fingerprint (trained, or loaded from a checkpoint) refuses a catalog
        with other ids or another order: its adapter rows belong to the recorded one.
        """
        if len(catalog) != self.config.num_items:
            raise ValueError(
                f"The catalog has {len(catalog)} items but this model scores {self.config.num_items} "
                "(config.num_items): they must be the same catalog, in the same order."
            )
        check_catalog_binding(self.config, catalog, "the catalog passed to set_catalog")
        self.config.catalog_fingerprint = catalog.fingerprint
        self.catalog = catalog

    @torch.no_grad()
    def init_item_prior(self, item_counts: torch.Tensor | Sequence[float]) -> None:
        """Start the adapter's per-item bias at the log-frequency of each item (counts in catalog order).

        With a zero bias a fresh adapter ranks the catalog at random; starting from the training-split popularity
        lets training spend its steps on personalisation.

        Example:
            >>> model.init_item_prior([0.0] * (len(model.catalog) - 1) + [100.0])
            >>> int(model.adapter.item_embeddings.bias.argmax()) == len(model.catalog) - 1
            True
        """
        bias = self.adapter.item_embeddings.bias
        bias.copy_(log_popularity_prior(item_counts, self.config.num_items).to(bias.dtype))

    @torch.no_grad()
    def init_sampling_frequency(self, item_counts: torch.Tensor | Sequence[float]) -> None:
        """Give the sampled loss (``config.num_sampled_negatives``) how often each item is a training target (counts
        in catalog order, add-one smoothed): its logQ correction lowers each candidate by how often it is drawn.

        Example:
            >>> from transformers_iam import IAMConfig, IAMForCausalRecommendation
            >>> config = IAMConfig.from_dict({**model.config.to_dict(), "num_sampled_negatives": 8})
            >>> sampled = IAMForCausalRecommendation(config)
            >>> sampled.init_sampling_frequency([3.0] + [0.0] * 19)
            >>> round(float(sampled.item_log_frequency[0] - sampled.item_log_frequency[1]), 4)  # log(4 / 1)
            1.3863
        """
        if self.config.num_sampled_negatives is None:
            raise ValueError("init_sampling_frequency is for the sampled loss: config.num_sampled_negatives is None")
        counts = torch.as_tensor(item_counts, dtype=torch.float32).view(-1)
        if counts.numel() != self.config.num_items or not torch.isfinite(counts).all() or (counts < 0).any():
            raise ValueError(
                f"item_counts must be {self.config.num_items} finite counts >= 0 (one per catalog item, in its "
                f"order), got {counts.numel()} values"
            )
        self.item_log_frequency.copy_(sampling_log_frequency(counts))

    @torch.no_grad()
    def init_item_embeddings_from_text(self, renderer, batch_size: int = 64, scale: float = 0.1) -> None:
        """Start each item's adapter row from the backbone's reading of the item's text (``text_item_embeddings``).
        ``renderer``: an [`IAMDataCollator`] of the model's catalog, or the item token sequences in catalog order."""
        sequences = item_token_sequences(renderer, self.catalog)
        if len(sequences) != self.config.num_items:
            raise ValueError(f"got token ids for {len(sequences)} items, the catalog has {self.config.num_items}")
        with eval_mode(self):
            embeddings = text_item_embeddings(self.model, self.adapter, sequences, batch_size, self.catalog)
        self._start_item_rows(embeddings, scale)

    @torch.no_grad()
    def _start_item_rows(self, embeddings: torch.Tensor, scale: float = 0.1) -> None:
        """The adapter's rows set to items' unit-norm embeddings read from text, times ``scale``."""
        weight = self.adapter.item_embeddings.weight
        weight.copy_((embeddings * scale).to(weight.dtype))

    @torch.no_grad()
    def init_item_text_features(self, renderer) -> None:
        """Read every catalog item's text once for ``config.item_rows_from_text``: its states where items enter the
        layers above the leading intra run (mean and last, each item read alone), kept in the adapter
        (``item_text_features``, saved with the model). ``renderer``: an [`IAMDataCollator`] of the model's catalog
        (or the item token sequences in catalog order).

        Example:
            >>> from transformers_iam import IAMConfig, IAMForCausalRecommendation
            >>> config = IAMConfig.from_dict({**model.config.to_dict(), "item_rows_from_text": True})
            >>> text_model = IAMForCausalRecommendation(config)
            >>> text_model.set_catalog(model.catalog)
            >>> text_model.init_item_text_features(collator)
            >>> text_model.adapter.item_text_features.shape
            torch.Size([20, 64])
        """
        if not self.config.item_rows_from_text:
            raise ValueError("init_item_text_features is for rows read from text: config.item_rows_from_text is False")
        sequences = item_token_sequences(renderer, self.catalog)
        if len(sequences) != self.config.num_items:
            raise ValueError(f"got token ids for {len(sequences)} items, the catalog has {self.config.num_items}")
        with eval_mode(self):
            features = self._text_features(sequences)
        for adapter in module_copies(self.adapter):
            adapter.item_text_features.copy_(features.to(adapter.item_text_features))

    def _grown_head(
        self, adapter: nn.Module, known_features: torch.Tensor, new_features: torch.Tensor, score_offset: float
    ) -> nn.Linear:
        """``adapter``'s scoring head with rows for the new items (their text features ``new_features``): with rows
        read from text (``config.item_rows_from_text``), no residual (the trained text map scores them); otherwise
        the ridge map from the trained items' text features (``known_features``) to their rows, fitted on this copy's
        own rows. ``score_offset`` is added to the new items' bias."""
        head = adapter.item_embeddings
        if self.config.item_rows_from_text:
            rows = head.weight.new_zeros(new_features.shape[0], head.weight.shape[1] + 1)
        else:
            trained_rows = torch.cat([head.weight, head.bias[:, None]], dim=1)
            rows, ridge = rows_from_text(known_features, trained_rows, new_features)
            logger.info(f"add_items: {new_features.shape[0]} items scored from text (ridge {ridge:g}, cross-validated)")
        return _grown_linear(head, rows[:, :-1], rows[:, -1] + score_offset)

    def _text_features(self, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        return item_text_features(decoder_parts(self.model), sequences, self.num_leading_intra_layers).to(
            self.adapter.dense.weight
        )

    @torch.no_grad()
    def add_items(self, item_ids: Sequence, texts: Sequence[str], renderer, score_offset: float = 0.0) -> ItemCatalog:
        """Add new items to a trained model's catalog, scored from their text, without retraining.

        Items that arrive after training (cold items) have no trained adapter row. With
        ``config.item_rows_from_text`` a new item is scored by the trained map of its text features (the item's
        states where items enter the layers above the intra run, mean and last), with no residual of its own: as
        the items dropped in training (``config.new_item_dropout``) were. Otherwise it gets the row (item embedding
        and bias) that a ridge regression fitted on the trained catalog predicts from those features, the strength
        chosen by cross-validation over the trained items. Item id embeddings of new items are zero (they are read
        from their text alone). The catalog binding
        (``config.num_items``, ``catalog_fingerprint``) and an attached item-state cache are extended; ``renderer``
        (an [`IAMDataCollator`]) is switched to the extended catalog so it renders the new items.

        On a model wrapped by PEFT (``apply_lora``) every copy of the adapter and of the item id table grows (the
        trained copy and PEFT's original), so the wrapped model scores the new items and its saved LoRA adapter holds
        their rows; to load that adapter again, add the same items to the base model first (docs/lora.md).

        ``score_offset`` is added to every new item's score (its bias), for every user: how far new items are pushed
        up (or down) against the trained ones. Every top-10 place a new item wins is one a trained item loses; on
        ml-100k's cold split an offset of -1 kept warm users' NDCG@10 and gave cold targets little, 0 gave them
        more at 0.85x for warm users (docs/results.md, "Training for new items"). Choose it on validation.

        Returns the extended catalog (the old items first, in their order, then the new ones).

        Example:
            >>> extended = model.add_items(["i20"], ["A New Movie (1998) | Drama"], collator)
            >>> len(extended), model.config.num_items
            (21, 21)
            >>> model.recommend(**collator([{"history": ["i20"]}]), k=3).scores.shape
            torch.Size([1, 3])
        """
        if self.catalog is None:
            raise ValueError("add_items extends the model's catalog: attach it first (set_catalog)")
        if (
            isinstance(score_offset, bool)
            or not isinstance(score_offset, (int, float))
            or not math.isfinite(score_offset)
        ):
            raise ValueError(f"score_offset must be a finite number, got {score_offset!r}")
        new = _new_items(item_ids, texts)
        known = [item for item in new.item_ids if item in self.catalog]
        if known:
            raise ValueError(f"items {known[:5]} are already in the catalog ({len(known)} of {len(new)})")
        if not callable(getattr(renderer, "extend_catalog", None)):
            raise TypeError(
                f"add_items renders the new items with renderer=, an IAMDataCollator, got {type(renderer).__name__}"
            )
        if self.config.item_rows_from_text and not bool(self.adapter.item_text_features.any()):
            # new items would be read from text while the trained ones were not: their rows would not compare
            raise ValueError(
                "this model reads item rows from text (config.item_rows_from_text) but its items' text features were "
                "never read: call model.init_item_text_features(collator) before training, then add items"
            )
        old_size = len(self.catalog)
        extended = ItemCatalog(self.catalog.item_ids + new.item_ids, self.catalog.texts + new.texts)
        rendered_from = renderer.catalog
        renderer.extend_catalog(extended)  # refuses a collator of another catalog before anything changes
        try:  # everything the extension needs is computed before the model changes: a failure changes nothing
            sequences = item_token_sequences(renderer, extended)
            # rows read from text keep the trained items' features: only the new items are read; the ridge map needs
            # the trained items' features too
            read_from = old_size if self.config.item_rows_from_text else 0
            features = self._text_features(sequences[read_from:])
            known_features, new_features = features[: old_size - read_from], features[old_size - read_from :]
            heads = [
                (adapter, self._grown_head(adapter, known_features, new_features, score_offset))
                for adapter in module_copies(self.adapter)
            ]
            tables = {}
            if self.item_id_embeddings is not None:
                for table in module_copies(self.item_id_embeddings):
                    tables[id(table)] = table.grown(self.config, len(extended))
            cache = None
            if self.item_cache is not None:
                parts = decoder_parts(self.model)
                states = encode_item_sequences(parts, sequences[old_size:], self.num_leading_intra_layers)
                cache = self.item_cache.extend(sequences[old_size:], states)
        except BaseException:  # an interrupt too: a failed call leaves the collator as it was
            renderer.catalog = rendered_from
            raise
        for adapter, head in heads:
            adapter.item_embeddings = head
            if self.config.item_rows_from_text:
                adapter.item_text_features = torch.cat(
                    [adapter.item_text_features, new_features.to(adapter.item_text_features)]
                )
        if tables:
            replace_module(self, "item_id_embeddings", lambda table: tables[id(table)])
        if self.config.num_sampled_negatives is not None:  # new items: never a training target (count 0, smoothed)
            self.item_log_frequency = torch.cat([self.item_log_frequency, self.item_log_frequency.new_zeros(len(new))])
        self.config.num_items = len(extended)
        self.config.catalog_fingerprint = None  # the binding moves to the extended catalog
        self.set_catalog(extended)
        if cache is not None:
            self.item_cache = cache
        return extended


def _new_items(item_ids: Sequence, texts: Sequence[str]) -> ItemCatalog:
    """``add_items``' arguments as a catalog, checked as the catalog's are (a string would be read one character
    per item)."""
    for name, value in (("item_ids", item_ids), ("texts", texts)):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise TypeError(f"add_items: {name} must be a list of {name.replace('_', ' ')}, got {value!r:.80}")
    if len(item_ids) != len(texts):
        raise ValueError(f"add_items got {len(item_ids)} item_ids but {len(texts)} texts: one text per item")
    if not item_ids:
        raise ValueError("add_items needs at least one item (item_ids is empty)")
    return ItemCatalog(list(item_ids), list(texts))


def _is_peft_wrapper(module: nn.Module) -> bool:
    # PEFT's ModulesToSaveWrapper, which apply_lora puts around the modules it trains in full; read by its
    # attributes, so the core does not import PEFT
    return hasattr(module, "original_module") and hasattr(module, "modules_to_save")


def module_copies(module: nn.Module) -> list[nn.Module]:
    """Every copy of ``module`` a forward may run: itself, or, inside PEFT's ``ModulesToSaveWrapper``, PEFT's
    original and each adapter's trained copy."""
    return [module.original_module, *module.modules_to_save.values()] if _is_peft_wrapper(module) else [module]


def replace_module(owner: nn.Module, name: str, replace: Callable[[nn.Module], nn.Module]) -> None:
    """Set ``owner.<name>`` to ``replace(module)``; inside PEFT's wrapper, replace each copy (see `module_copies`)."""
    module = getattr(owner, name)
    if not _is_peft_wrapper(module):
        setattr(owner, name, replace(module))
        return
    module.original_module = replace(module.original_module)
    for adapter_name, copy in list(module.modules_to_save.items()):
        module.modules_to_save[adapter_name] = replace(copy)


__all__ = ["CatalogMixin"]
