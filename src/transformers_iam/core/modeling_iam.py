"""IAM: a transformers decoder with item-aware attention and a recommendation adapter."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, logging

from .adapter import (
    _INITIAL_LOGIT_SCALE,
    IAMRecommendationAdapter,
    TextToItemRows,
    log_popularity_prior,
    rows_from_text,
    text_item_embeddings,
)
from .attention import (
    current_attn_implementation,
    enable_item_aware_attention,
    item_aware_implementation,
)
from .catalog import ItemCatalog, check_catalog_binding, checkpoint_catalog, remove_stale_catalog
from .configuration_iam import IAMConfig, check_item_level_options
from .decoder import decoder_parts, eval_mode
from .inputs import check_forward_inputs, default_position_ids
from .item_cache import ItemStateCache, build_item_cache, cache_refusal
from .item_states import (
    Layout,
    encode_item_sequences,
    item_aware_forward,
    item_text_features,
    leading_intra_layers,
)
from .loading import hub_arguments, load_pretrained_decoder
from .masks import check_layer_types
from .ranking import exclude_items
from .readout import gather_states, item_end_positions, last_real_positions

logger = logging.get_logger(__name__)


@dataclass
class IAMRecommendationOutput(ModelOutput):
    """Output of [`IAMForCausalRecommendation.forward`].

    Args:
        loss: cross-entropy over the whole catalog, when `labels` are given.
        logits: `(batch, num_items)` scores, one per catalog item.
        hidden_states: the backbone's hidden states (embeddings, then each layer), when asked for.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class IAMBackboneOutput(ModelOutput):
    """The backbone's final states in the layout its top layers ran in, which is where the adapter reads.

    Args:
        last_hidden_state: `(batch, width, hidden)`; `width` is the input's length, or fewer positions when the layers
            above the leading intra run saw only some tokens (`config.num_item_tokens`).
        attention_mask: `(batch, width)`, 1 on real tokens of that layout.
        item_segment_ids: `(batch, width)`, the segment of each position of that layout.
        hidden_states: embeddings and each layer's output at the input's positions, when asked for.
    """

    last_hidden_state: torch.FloatTensor | None = None
    attention_mask: torch.LongTensor | None = None
    item_segment_ids: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class IAMRecommendations(ModelOutput):
    """Top-k items per user: `scores` and catalog `indices` `(batch, k)`; `item_ids` when the model has a catalog."""

    scores: torch.FloatTensor | None = None
    indices: torch.LongTensor | None = None
    item_ids: list[list[str]] | None = None


def _grown_linear(linear: nn.Linear, new_weight: torch.Tensor, new_bias: torch.Tensor) -> nn.Linear:
    """``linear`` with output rows appended (same device, dtype and gradient setting)."""
    grown = nn.Linear(linear.in_features, linear.out_features + new_weight.shape[0]).to(linear.weight)
    grown.weight.data = torch.cat([linear.weight.detach(), new_weight.to(linear.weight)])
    grown.bias.data = torch.cat([linear.bias.detach(), new_bias.to(linear.bias)])
    grown.requires_grad_(linear.weight.requires_grad)
    return grown


def _token_sequences(renderer, num_items: int) -> list[list[int]]:
    """Item token sequences in catalog order: given, or rendered by a collator (``item_token_ids``)."""
    if isinstance(renderer, Sequence):
        sequences = [list(tokens) for tokens in renderer]
    else:
        sequences = [renderer.item_token_ids(index) for index in range(len(renderer.catalog))]
    if len(sequences) != num_items:
        raise ValueError(f"got {len(sequences)} item token sequences, the catalog has {num_items} items")
    return sequences


def _drop_whole_vectors(vectors: torch.Tensor, dropout: float, training: bool) -> torch.Tensor:
    """`IAMConfig.item_id_dropout`: one draw per looked-up vector, so an item enters either with its identity or from
    its text alone."""
    if not training or dropout == 0:
        return vectors
    kept = torch.ones(vectors.shape[:-1] + (1,), dtype=vectors.dtype, device=vectors.device)
    return vectors * nn.functional.dropout(kept, dropout, training=True)


class ItemIdEmbeddings(nn.Embedding):
    """One learned vector per catalog item, zero-initialised (see `IAMConfig.use_item_id_embeddings`); in training,
    a share ``dropout`` of the looked-up vectors is dropped whole (`IAMConfig.item_id_dropout`). With
    ``embedding_size`` the table is that narrow and a shared learned projection maps it to ``hidden_size``
    (`IAMConfig.item_id_embedding_size`); the rows still start at 0, so an untrained item still adds nothing."""

    def __init__(self, num_items: int, hidden_size: int, dropout: float = 0.0, embedding_size: int | None = None):
        super().__init__(num_items, embedding_size or hidden_size)
        self.dropout = dropout
        self.projection = None if embedding_size is None else nn.Linear(embedding_size, hidden_size, bias=False)

    @classmethod
    def from_config(cls, config: IAMConfig, num_items: int) -> ItemIdEmbeddings:
        """The table `config` asks for, with ``num_items`` rows (the catalog's, or a grown catalog's)."""
        return cls(num_items, config.text_config.hidden_size, config.item_id_dropout, config.item_id_embedding_size)

    def forward(self, item_indices: torch.Tensor) -> torch.Tensor:
        vectors = super().forward(item_indices)
        if self.projection is not None:
            vectors = self.projection(vectors)
        return _drop_whole_vectors(vectors, self.dropout, self.training)


class TiedItemIdEmbeddings(nn.Module):
    """Item id vectors shared with the adapter's output item embeddings (`IAMConfig.tie_item_id_embeddings`): an
    item's vector is its adapter row times a learned per-dimension gate, zero-initialised."""

    def __init__(self, hidden_size: int, dropout: float = 0.0):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(hidden_size))
        self.dropout = dropout

    def forward(self, item_indices: torch.Tensor, item_rows: torch.Tensor) -> torch.Tensor:
        vectors = nn.functional.embedding(item_indices, item_rows) * self.gate
        return _drop_whole_vectors(vectors, self.dropout, self.training)


class IAMPreTrainedModel(PreTrainedModel):
    config_class = IAMConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True
    # attn_implementation="flex_attention" must pass transformers' own check before __init__ maps it to iam_flex
    _supports_flex_attn = True
    # Our forward takes **kwargs but computes a per-example mean loss itself: without this the
    # Trainer stops dividing the loss by the gradient accumulation steps (docs/architecture.md, "Traps").
    accepts_loss_kwargs = False

    def _init_weights(self, module: nn.Module) -> None:
        # zero: an untrained model is the text-only model, and an item never trained keeps no identity of its own
        if isinstance(module, ItemIdEmbeddings):
            init.zeros_(module.weight)
        elif isinstance(module, TiedItemIdEmbeddings):
            init.zeros_(module.gate)
        elif isinstance(module, TextToItemRows):  # zero: at first the rows are the items' own
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, IAMRecommendationAdapter) and hasattr(module, "logit_scale"):
            init.constant_(module.logit_scale, _INITIAL_LOGIT_SCALE)
        else:
            super()._init_weights(module)


class IAMForCausalRecommendation(IAMPreTrainedModel):
    r"""
    A decoder LLM whose attention layers are item-aware (intra-item, inter-item or plain causal, per
    `config.resolved_layer_types`), read at the last non-padding token by a recommendation adapter that scores the
    whole item catalog.

    Example:
        >>> import torch
        >>> from transformers import LlamaConfig
        >>> from transformers_iam import IAMConfig, IAMForCausalRecommendation
        >>> text_config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        ...                           num_attention_heads=4, num_key_value_heads=2)
        >>> model = IAMForCausalRecommendation(IAMConfig(text_config=text_config, num_items=50))
        >>> input_ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
        >>> item_segment_ids = torch.tensor([[0, 1, 1, 2, 2, 0]])
        >>> model(input_ids=input_ids, item_segment_ids=item_segment_ids).logits.shape
        torch.Size([1, 50])
    """

    def __init__(self, config: IAMConfig):
        super().__init__(config)
        # The attention implementation is not saved with the config, so a reloaded model would silently run plain
        # attention: always map the requested backend to its item-aware twin here.
        implementation = item_aware_implementation(current_attn_implementation(config))
        self.model = AutoModel.from_config(config.text_config, attn_implementation=implementation)
        enable_item_aware_attention(self.model, config.resolved_layer_types)
        self.item_id_embeddings: ItemIdEmbeddings | TiedItemIdEmbeddings | None = None
        if config.use_item_id_embeddings and config.tie_item_id_embeddings:
            self.item_id_embeddings = TiedItemIdEmbeddings(config.text_config.hidden_size, config.item_id_dropout)
        elif config.use_item_id_embeddings:
            self.item_id_embeddings = ItemIdEmbeddings.from_config(config, config.num_items)
        self.adapter = IAMRecommendationAdapter(config)
        self.catalog: ItemCatalog | None = None
        self.item_cache: ItemStateCache | None = None
        self.post_init()
        self.set_attn_implementation(implementation)  # this config and the backbone's, through the public route

    # -- attention backend and layer kinds ---------------------------------------------------
    def set_attn_implementation(self, attn_implementation: str | dict, **kwargs):
        if isinstance(attn_implementation, str):
            attn_implementation = item_aware_implementation(attn_implementation)
        result = super().set_attn_implementation(attn_implementation, **kwargs)
        self._refresh_item_cache("the attention implementation changed")
        return result

    def set_iam_layer_types(self, layer_types: list[str]) -> None:
        """Switch the per-layer kinds of this model in place (same weights), e.g. for an ablation. An item-state cache
        is rebuilt for the new leading intra run (or dropped when it can no longer be exact), with a log line."""
        layer_types = check_layer_types(layer_types, self.config.num_backbone_layers)  # before anything changes
        check_item_level_options(self.config, layer_types)
        enable_item_aware_attention(self.model, layer_types)
        self.config.iam_layer_types = layer_types
        self._refresh_item_cache("the layer kinds changed")

    def _refresh_item_cache(self, reason: str) -> None:
        cache = getattr(self, "item_cache", None)
        if cache is None:
            return
        refusal = cache_refusal(self)
        if refusal is not None:
            self.item_cache = None
            logger.warning(f"item-state cache dropped ({reason}): {refusal}")
            return
        self.item_cache = build_item_cache(self, cache.token_sequences)
        logger.warning(f"item-state cache rebuilt ({reason}): {self.item_cache.num_items} items")

    @torch.no_grad()
    def init_item_prior(self, item_counts: torch.Tensor) -> None:
        """Start the adapter's per-item bias at the log-frequency of each item (counts in catalog order).

        With a zero bias a fresh adapter ranks the catalog at random; starting from the
        training-split popularity lets training spend its steps on personalisation.
        """
        bias = self.adapter.item_embeddings.bias
        bias.copy_(log_popularity_prior(item_counts, self.config.num_items).to(bias.dtype))

    @torch.no_grad()
    def init_item_embeddings_from_text(
        self, item_token_ids: list[list[int]], batch_size: int = 64, scale: float = 0.1
    ) -> None:
        """Start each item's embedding from the backbone's reading of the item's text (``text_item_embeddings``)."""
        if len(item_token_ids) != self.config.num_items:
            raise ValueError(f"got token ids for {len(item_token_ids)} items, the catalog has {self.config.num_items}")
        with eval_mode(self):
            embeddings = text_item_embeddings(self.model, self.adapter, item_token_ids, batch_size, self.catalog)
        weight = self.adapter.item_embeddings.weight
        weight.copy_((embeddings * scale).to(weight.dtype))

    @torch.no_grad()
    def init_item_text_features(self, renderer) -> None:
        """Read every catalog item's text once (``config.score_items_from_text``): its states where items enter the
        layers above the intra run (mean and last), standardised over the catalog and kept in the adapter.
        ``renderer``: an [`IAMDataCollator`] (or the item token sequences in catalog order)."""
        if not hasattr(self.adapter, "text_to_item"):
            raise ValueError("init_item_text_features needs config.score_items_from_text=True")
        features = self._text_features(_token_sequences(renderer, self.config.num_items))
        self.adapter.text_feature_mean.copy_(features.mean(0))
        self.adapter.text_feature_std.copy_(features.std(0).clamp(min=1e-6))
        self.adapter.item_text_features.copy_(self.adapter.standardised(features))

    def _text_features(self, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        return item_text_features(decoder_parts(self.model), sequences, self.num_leading_intra_layers).to(
            self.adapter.dense.weight
        )

    # -- catalog -----------------------------------------------------------------------------
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
    def add_items(self, item_ids: Sequence, texts: Sequence[str], renderer) -> ItemCatalog:
        """Add new items to a trained model's catalog, scored from their text, without retraining.

        Items that arrive after training (cold items) have no trained adapter row. Each new item gets the row (item
        embedding and bias) that a ridge regression fitted on the trained catalog predicts from its text: the text
        features are the item's states where items enter the layers above the intra run (mean and last), the
        targets the trained rows, the strength chosen by cross-validation over the trained items. Item id
        embeddings of new items are zero (they are read from their text alone). The catalog binding
        (``config.num_items``, ``catalog_fingerprint``) and an attached item-state cache are extended; ``renderer``
        (an [`IAMDataCollator`]) is switched to the extended catalog so it renders the new items.

        Returns the extended catalog (the old items first, in their order, then the new ones).

        Example:
            >>> model.add_items(["1683"], ["A New Movie (1998) | Drama"], collator)  # doctest: +SKIP
            >>> model.recommend(**collator([{"history": ["1683"]}]), k=5).item_ids  # doctest: +SKIP
        """
        if self.catalog is None:
            raise ValueError("add_items extends the model's catalog: attach it first (set_catalog)")
        new = ItemCatalog(list(item_ids), list(texts))
        known = [item for item in new.item_ids if item in self.catalog]
        if known:
            raise ValueError(f"items {known[:5]} are already in the catalog ({len(known)} of {len(new)})")
        old_size = len(self.catalog)
        extended = ItemCatalog(self.catalog.item_ids + new.item_ids, self.catalog.texts + new.texts)
        renderer.extend_catalog(extended)
        sequences = [renderer.item_token_ids(index) for index in range(len(extended))]
        parts = decoder_parts(self.model)
        features = self._text_features(sequences)
        head = self.adapter.item_embeddings
        if hasattr(self.adapter, "text_to_item"):  # scored by the text map: no row of their own
            rows = torch.zeros(len(new), head.weight.shape[1] + 1).to(head.weight)
            self.adapter.item_text_features = torch.cat(
                [self.adapter.item_text_features, self.adapter.standardised(features[old_size:])]
            )
            logger.info(f"add_items: {len(new)} items scored from their text by the trained text map")
        else:
            trained_rows = torch.cat([head.weight, head.bias[:, None]], dim=1)
            rows, ridge = rows_from_text(features[:old_size], trained_rows, features[old_size:])
            logger.info(
                f"add_items: {len(new)} items scored from their text (ridge {ridge:g}, chosen by cross-validation)"
            )
        self.adapter.item_embeddings = _grown_linear(head, rows[:, :-1], rows[:, -1])
        if self.item_id_embeddings is not None and not self.config.tie_item_id_embeddings:  # tied: the grown rows
            embeddings = self.item_id_embeddings
            grown = ItemIdEmbeddings.from_config(self.config, len(extended)).to(embeddings.weight)
            grown.weight.zero_()
            grown.weight[:old_size] = embeddings.weight
            if embeddings.projection is not None:
                grown.projection.weight.copy_(embeddings.projection.weight)
            self.item_id_embeddings = grown
        self.config.num_items = len(extended)
        self.config.catalog_fingerprint = None  # the binding moves to the extended catalog
        self.set_catalog(extended)
        if self.item_cache is not None:
            states = encode_item_sequences(parts, sequences[old_size:], self.num_leading_intra_layers)
            self.item_cache = self.item_cache.extend(sequences[old_size:], states)
        return extended

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """Save as transformers does, plus ``item_catalog.json``; an older model's catalog file is removed first, so
        a folder never pairs these weights with another model's catalog (docs/reliability.md)."""
        is_main_process = kwargs.get("is_main_process", True)
        if is_main_process:
            remove_stale_catalog(save_directory)
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.catalog is not None and is_main_process:
            self.catalog.save(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load as transformers does, with the checkpoint's catalog; the catalog file is read and checked against
        ``config.catalog_fingerprint`` *before* the weights are loaded."""
        catalog = None
        if pretrained_model_name_or_path is not None:
            config = kwargs.get("config")
            if not isinstance(config, IAMConfig):
                config = IAMConfig.from_pretrained(pretrained_model_name_or_path, **hub_arguments(kwargs))
            catalog = checkpoint_catalog(pretrained_model_name_or_path, config, **hub_arguments(kwargs))
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        if catalog is not None:
            model.set_catalog(catalog)
        return model

    @classmethod
    def from_backbone(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        num_items: int | None = None,
        catalog: ItemCatalog | None = None,
        gguf_file: str | None = None,
        num_backbone_layers: int | None = None,
        dtype: torch.dtype = torch.float32,
        attn_implementation: str | None = None,
        attention_dropout: float | None = None,
        **config_overrides,
    ) -> IAMForCausalRecommendation:
        """Build an IAM model around pretrained decoder weights.

        Args:
            pretrained_model_name_or_path: a local HF checkpoint, a hub id already in the cache, or the folder
                holding `gguf_file`.
            num_items: the catalog size (taken from `catalog` when given).
            catalog: the item catalog, attached to the model and saved with it.
            gguf_file: a GGUF file name inside that folder (dequantised on load; needs `gguf`).
            num_backbone_layers: keep only the first N decoder layers (cheap CPU runs).
            attention_dropout: the backbone's attention dropout in training (its config's `attention_dropout`; the
                pretrained value when `None`). Layers served by the item-state cache do not run in training.
            config_overrides: any other [`IAMConfig`] field (`iam_layout`, `iam_layer_types`, ...).

        Example:
            >>> model = IAMForCausalRecommendation.from_backbone("HuggingFaceTB/SmolLM2-135M", catalog=catalog,
            ...                                                  iam_layout="stacked")  # doctest: +SKIP
        """
        if catalog is not None:
            if num_items is not None and num_items != len(catalog):
                raise ValueError(f"num_items={num_items} but the catalog has {len(catalog)} items")
            num_items = len(catalog)
        if num_items is None:
            raise ValueError("from_backbone needs num_items or a catalog")
        backbone = load_pretrained_decoder(
            pretrained_model_name_or_path, gguf_file=gguf_file, num_layers=num_backbone_layers, dtype=dtype
        )
        if hasattr(backbone, "get_decoder") and not hasattr(backbone, "layers"):
            backbone = backbone.get_decoder()
        if attn_implementation is not None:
            config_overrides["attn_implementation"] = attn_implementation
        text_config = copy.deepcopy(backbone.config)
        if attention_dropout is not None:
            text_config.attention_dropout = attention_dropout
        config = IAMConfig(text_config=text_config, num_items=num_items, **config_overrides)
        model = cls(config).to(dtype)
        missing, unexpected = model.model.load_state_dict(backbone.state_dict(), strict=False)
        if missing or unexpected:
            raise ValueError(f"Backbone weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
        model.config.name_or_path = str(pretrained_model_name_or_path)
        if catalog is not None:
            model.set_catalog(catalog)
        return model

    # -- forward -----------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        item_segment_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        output_hidden_states: bool | None = None,
        history_item_indices: torch.LongTensor | None = None,
        segment_item_indices: torch.LongTensor | None = None,
        **kwargs,
    ) -> IAMRecommendationOutput:
        r"""
        Args:
            item_segment_ids (`torch.LongTensor` of shape `(batch, sequence_length)`):
                0 for context tokens (prompt, query suffix, padding), 1..n for the tokens of the n history items, each
                item one contiguous span. Required unless every layer is `full`.
            labels (`torch.LongTensor`, *optional*):
                Catalog indices of the targets: `(batch,)` with `config.supervision="last"`, `(batch, items)` with
                `"every_item"` (the item after each history item, `-100` where there is none). Gives a cross-entropy
                loss over the whole catalog.
            history_item_indices (`torch.LongTensor`, *optional*):
                Emitted by [`IAMDataCollator`] for evaluation (history exclusion); not used by the forward.
            segment_item_indices (`torch.LongTensor` of shape `(batch, items)`, *optional*):
                The catalog index of the item in segment `j + 1` (`-1` pads); needed with item id embeddings.
            kwargs: `intra_implementation` (`"masked"` / `"packed"`) and `use_item_cache` (`False` to bypass an
                attached cache) choose this call's path; the outputs are the same to float rounding.
        """
        backbone = self.backbone_forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            item_segment_ids=item_segment_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            segment_item_indices=segment_item_indices,
            output_hidden_states=bool(output_hidden_states),
            **kwargs,
        )
        item_ends = None
        if self.config.readout == "query":
            read = last_real_positions(backbone.attention_mask)
        else:
            item_ends = item_end_positions(backbone.item_segment_ids, backbone.attention_mask)
            read = item_ends.max(-1).values
            if (read < 0).any():
                row = int((read < 0).nonzero()[0, 0])
                raise ValueError(f"row {row} has no history item to read (config.readout='last_item')")
        hidden = backbone.last_hidden_state
        logits = self.adapter(gather_states(hidden, read))
        loss = None if labels is None else self._loss(logits, hidden, labels, item_ends)
        return IAMRecommendationOutput(loss=loss, logits=logits, hidden_states=backbone.hidden_states)

    def _loss(
        self, logits: torch.Tensor, hidden: torch.Tensor, labels: torch.Tensor, item_ends: torch.Tensor | None
    ) -> torch.Tensor:
        """Cross-entropy over the whole catalog: of the one target per row, or of every target after every item."""
        labels = labels.to(logits.device)
        if self.config.supervision == "every_item":
            if labels.shape != item_ends.shape:
                raise ValueError(
                    f"every-item labels have shape {tuple(labels.shape)} but the batch has {tuple(item_ends.shape)} "
                    "(batch, items): one target after each item, -100 where there is none (config.supervision)"
                )
            targeted = labels != -100
            if (targeted & (item_ends < 0)).any():
                raise ValueError("every-item labels give a target after an item that is not in the row")
            self._check_catalog_indices(labels[targeted])
            item_logits = self.adapter(hidden[targeted.nonzero(as_tuple=True)[0], item_ends[targeted]])
            return nn.functional.cross_entropy(item_logits.float(), labels[targeted])
        if labels.dim() > 1 and labels.shape[1] != 1:
            raise ValueError(
                f"labels of shape {tuple(labels.shape)}: with config.supervision='last' each row has one target "
                "(batch,); every-item targets (batch, items) need config.supervision='every_item'"
            )
        labels = labels.view(-1)
        if labels.numel() != logits.shape[0]:
            raise ValueError(f"labels has {labels.numel()} entries for a batch of {logits.shape[0]}")
        self._check_catalog_indices(labels)
        return nn.functional.cross_entropy(logits.float(), labels)

    def _check_catalog_indices(self, labels: torch.Tensor) -> None:
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.config.num_items):
            raise ValueError(
                f"labels must be catalog indices in [0, {self.config.num_items}), got "
                f"[{int(labels.min())}, {int(labels.max())}]"
            )

    def backbone_forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        item_segment_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        segment_item_indices: torch.LongTensor | None = None,
        output_hidden_states: bool = False,
        intra_implementation: str | None = None,
        use_item_cache: bool | ItemStateCache | None = None,
        **kwargs,
    ) -> IAMBackboneOutput:
        """The backbone's final states where the adapter reads them, by the path this call asks for (or the config
        and an attached item cache choose). Every path gives the masked path's states, to float rounding.

        Example:
            >>> out = model.backbone_forward(**batch, use_item_cache=False)  # doctest: +SKIP
            >>> out.last_hidden_state.shape, out.attention_mask.shape  # doctest: +SKIP
        """
        check_forward_inputs(
            self.config, input_ids, inputs_embeds, attention_mask, item_segment_ids, segment_item_indices
        )
        reference = input_ids if input_ids is not None else inputs_embeds
        if attention_mask is None:
            attention_mask = torch.ones(reference.shape[:2], dtype=torch.long, device=reference.device)
        if position_ids is None:
            position_ids = default_position_ids(attention_mask)
        lower, cache = self._lower_path(
            input_ids, item_segment_ids, output_hidden_states, intra_implementation, use_item_cache
        )
        item_level = self.config.num_item_tokens is not None or self.item_id_embeddings is not None
        if lower == "masked" and not item_level:
            return self._reference_forward(
                input_ids, inputs_embeds, attention_mask, position_ids, item_segment_ids, output_hidden_states, **kwargs
            )
        if kwargs:
            raise TypeError(f"unexpected arguments for this model's forward: {sorted(kwargs)}")
        if cache is not None:
            cache.check(
                self.num_leading_intra_layers, self.config.num_item_tokens, current_attn_implementation(self.config)
            )
        output = item_aware_forward(
            decoder_parts(self.model),
            input_ids,
            inputs_embeds,
            attention_mask,
            position_ids,
            item_segment_ids,
            num_leading_intra=self.num_leading_intra_layers,
            lower=lower,
            cache=cache,
            num_item_tokens=self.config.num_item_tokens,
            renumber_positions=self.config.item_token_positions == "renumbered",
            # nothing reads the context after the last item when the adapter reads item ends
            drop_trailing_context=self.config.readout == "last_item" and not output_hidden_states,
            token_items=self._token_items(item_segment_ids, attention_mask, segment_item_indices),
            item_id_embeddings=None if self.item_id_embeddings is None else self._item_id_vectors,
            output_hidden_states=output_hidden_states,
        )
        layout: Layout = output.layout
        return IAMBackboneOutput(
            output.last_hidden_state, layout.attention_mask, layout.item_segment_ids, output.hidden_states
        )

    def _reference_forward(
        self,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        item_segment_ids: torch.Tensor | None,
        output_hidden_states: bool,
        **kwargs,
    ) -> IAMBackboneOutput:
        """The masked path: the backbone's own forward, every layer over the whole prompt under item-aware masks."""
        if item_segment_ids is not None:
            kwargs["item_segment_ids"] = item_segment_ids
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        segments = item_segment_ids if item_segment_ids is not None else torch.zeros_like(attention_mask)
        return IAMBackboneOutput(outputs.last_hidden_state, attention_mask, segments, outputs.hidden_states)

    def _lower_path(
        self,
        input_ids: torch.Tensor | None,
        item_segment_ids: torch.Tensor | None,
        output_hidden_states: bool,
        intra_implementation: str | None,
        use_item_cache: bool | ItemStateCache | None,
    ) -> tuple[str, ItemStateCache | None]:
        """How this call computes the leading intra layers: ``"masked"``, ``"packed"`` or ``"cached"`` (and from
        which cache)."""
        if intra_implementation not in (None, "masked", "packed"):
            raise ValueError(f"intra_implementation must be 'masked' or 'packed', got {intra_implementation!r}")
        cache = use_item_cache if isinstance(use_item_cache, ItemStateCache) else None
        if cache is None and use_item_cache is not False:
            cache = self.item_cache
            if use_item_cache is True and cache is None:
                raise ValueError("use_item_cache=True but no item-state cache is attached (enable_item_cache)")
        per_item = input_ids is not None and item_segment_ids is not None and self.num_leading_intra_layers > 0
        if not per_item:
            return "masked", None
        if cache is not None and not output_hidden_states:  # the cache holds only the run's last states
            return "cached", cache
        implementation = intra_implementation or self.config.intra_implementation
        if cache is not None and intra_implementation is None:
            implementation = "packed"  # every layer's states of what the cache would have served
        return implementation, None

    def _item_id_vectors(self, item_indices: torch.Tensor) -> torch.Tensor:
        """The id vectors of catalog items: their own, or their adapter rows through the gate when tied (under LoRA
        ``self.adapter`` resolves to the copy PEFT trains)."""
        if self.config.tie_item_id_embeddings:  # not isinstance: under LoRA a PEFT wrapper holds them
            return self.item_id_embeddings(item_indices, self.adapter.item_embeddings.weight)
        return self.item_id_embeddings(item_indices)

    def _token_items(
        self,
        item_segment_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        segment_item_indices: torch.Tensor | None,
    ) -> torch.Tensor | None:
        """The catalog index of the item each token belongs to (``-1`` on context), for item id embeddings."""
        if self.item_id_embeddings is None:
            return None
        segments = item_segment_ids.long() * attention_mask.long()
        columns = (segments - 1).clamp(0, max(segment_item_indices.shape[1] - 1, 0))
        items = segment_item_indices.to(segments.device).long().gather(1, columns)
        return torch.where(segments > 0, items, torch.full_like(items, -1))

    # -- item states computed once -----------------------------------------------------------
    @property
    def num_leading_intra_layers(self) -> int:
        """The intra layers at the bottom of the stack: the ones the item-state cache and packed attention cover."""
        return leading_intra_layers(self.config.resolved_layer_types)

    def enable_item_cache(self, renderer, batch_size: int = 256) -> ItemStateCache:
        """Compute every catalog item's states after the leading intra layers once, and use them in every forward.

        ``renderer``: what renders the catalog's items as tokens (an [`IAMDataCollator`], or any object with a
        ``catalog`` and ``item_token_ids(catalog_index)``); or the token sequences themselves, in catalog order.

        Exact (to float rounding) because in those layers an item sees only itself and rotary positions are
        relative: the forward, `recommend`, evaluation inside the `Trainer` and the pipeline then run only the layers
        above for item tokens. Refused, with the reason, when it could not be exact: no leading intra run, positions
        that are not rotary, or trainable cached layers or token embeddings (freeze them first). The cache checks at
        each forward that it still describes the model (docs/architecture.md, "Compute once").

        Example:
            >>> model.model.requires_grad_(False)  # doctest: +SKIP
            >>> model.enable_item_cache(collator)  # doctest: +SKIP
        """
        if isinstance(renderer, Sequence):
            sequences = [list(tokens) for tokens in renderer]
        else:
            if self.catalog is not None and renderer.catalog != self.catalog:
                raise ValueError(
                    "the renderer's catalog is not this model's catalog: the cache would describe other items"
                )
            sequences = [renderer.item_token_ids(index) for index in range(len(renderer.catalog))]
        self.item_cache = build_item_cache(self, sequences, batch_size)
        return self.item_cache

    def disable_item_cache(self) -> None:
        """Drop the item-state cache (the leading intra layers run again in every forward)."""
        self.item_cache = None

    @torch.no_grad()
    def recommend(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        item_segment_ids: torch.LongTensor | None = None,
        k: int = 10,
        exclude_item_ids: torch.LongTensor | list[list[int]] | None = None,
        **kwargs,
    ) -> IAMRecommendations:
        """Top-k catalog items for each user.

        Args:
            exclude_item_ids: catalog indices never to recommend, per user: a list of lists, or a `(batch, n)` tensor
                padded with -1 (the collator's `history_item_indices`).

        Example:
            >>> batch = collator([{"history": ["1", "7"]}])  # doctest: +SKIP
            >>> model.recommend(**batch, k=5, exclude_item_ids=batch["history_item_indices"]).item_ids  # doctest: +SKIP
        """
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.config.num_items:
            raise ValueError(f"k must be an int in [1, {self.config.num_items}] (config.num_items), got {k!r}")
        kwargs.pop("labels", None)
        kwargs.pop("history_item_indices", None)
        logits = self(
            input_ids=input_ids, attention_mask=attention_mask, item_segment_ids=item_segment_ids, **kwargs
        ).logits.float()
        if exclude_item_ids is not None:
            logits = exclude_items(logits, exclude_item_ids)
            # topk would fill the missing places with excluded items at -inf: refuse instead
            left = (logits != float("-inf")).sum(-1)
            if bool((left < k).any()):
                row = int((left < k).nonzero()[0, 0])
                raise ValueError(
                    f"k={k} but user {row} has only {int(left[row])} items left after excluding "
                    f"{self.config.num_items - int(left[row])}; pass k <= {int(left.min())} (or exclude fewer items)"
                )
        scores, indices = logits.topk(k, dim=-1)
        item_ids = [self.catalog.ids_of(row) for row in indices.tolist()] if self.catalog is not None else None
        return IAMRecommendations(scores=scores, indices=indices, item_ids=item_ids)


__all__ = [
    "IAMForCausalRecommendation",
    "IAMPreTrainedModel",
    "IAMRecommendationOutput",
    "IAMRecommendations",
]
