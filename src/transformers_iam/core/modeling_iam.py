"""IAM: a transformers decoder with item-aware attention and a recommendation adapter."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import ModelOutput, logging

from .adapter import IAMRecommendationAdapter, log_popularity_prior, text_item_embeddings
from .attention import (
    current_attn_implementation,
    enable_item_aware_attention,
    item_aware_implementation,
)
from .catalog import CATALOG_FILE_NAME, ItemCatalog, check_catalog_binding
from .collator import IAMDataCollator
from .configuration_iam import IAMConfig
from .inputs import check_forward_inputs
from .item_cache import ItemStateCache, build_item_cache
from .item_states import forward_from_item_states, leading_intra_layers
from .loading import load_pretrained_decoder, optional_checkpoint_file
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
class IAMRecommendations(ModelOutput):
    """Top-k items per user: `scores` and catalog `indices` `(batch, k)`; `item_ids` when the model has a catalog."""

    scores: torch.FloatTensor | None = None
    indices: torch.LongTensor | None = None
    item_ids: list[list[str]] | None = None


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
        self.adapter = IAMRecommendationAdapter(config)
        self.catalog: ItemCatalog | None = None
        self.item_cache: ItemStateCache | None = None
        self.post_init()
        self.set_attn_implementation(implementation)  # this config and the backbone's, through the public route

    # -- attention backend -------------------------------------------------------------------
    def set_attn_implementation(self, attn_implementation: str | dict, **kwargs):
        if isinstance(attn_implementation, str):
            attn_implementation = item_aware_implementation(attn_implementation)
        return super().set_attn_implementation(attn_implementation, **kwargs)

    def set_iam_layer_types(self, layer_types: list[str]) -> None:
        """Switch the per-layer kinds of this model in place (same weights), e.g. for an ablation."""
        layer_types = check_layer_types(layer_types, self.config.num_backbone_layers)  # before anything changes
        enable_item_aware_attention(self.model, layer_types)
        self.config.iam_layer_types = layer_types

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
        was_training = self.training
        self.eval()
        try:
            embeddings = text_item_embeddings(self.model, self.adapter, item_token_ids, batch_size, self.catalog)
        finally:
            self.train(was_training)
        weight = self.adapter.item_embeddings.weight
        weight.copy_((embeddings * scale).to(weight.dtype))

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

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """Save as transformers does, plus ``item_catalog.json``; an older model's catalog file is removed first, so
        a folder never pairs these weights with another model's catalog (docs/reliability.md)."""
        is_main_process = kwargs.get("is_main_process", True)
        stale = os.path.join(save_directory, CATALOG_FILE_NAME)
        if is_main_process and os.path.isfile(stale):
            os.remove(stale)
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.catalog is not None and is_main_process:
            self.catalog.save(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load as transformers does, with the checkpoint's catalog; the catalog file is read and checked against
        ``config.catalog_fingerprint`` *before* the weights are loaded."""
        catalog, catalog_file = None, None
        if pretrained_model_name_or_path is not None:
            hub_kwargs = {
                key: kwargs[key]
                for key in ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
                if key in kwargs
            }
            config = kwargs.get("config")
            if not isinstance(config, IAMConfig):
                config = IAMConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
            catalog_file = optional_checkpoint_file(pretrained_model_name_or_path, CATALOG_FILE_NAME, **hub_kwargs)
            if catalog_file is not None:
                catalog = ItemCatalog.load(catalog_file)  # a corrupt file is named here, before any weight
                if len(catalog) != config.num_items:
                    raise ValueError(
                        f"{catalog_file}: the catalog has {len(catalog)} items but this model scores "
                        f"{config.num_items} (config.num_items): the file belongs to another model"
                    )
                check_catalog_binding(config, catalog, catalog_file)
            elif config.catalog_fingerprint is not None:
                logger.warning(
                    f"{pretrained_model_name_or_path}: config.json records a catalog (catalog_fingerprint) but "
                    f"{CATALOG_FILE_NAME} is missing: scores come by catalog index only, with no item ids. Attach "
                    "the training catalog with model.set_catalog(catalog)."
                )
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
        config = IAMConfig(text_config=copy.deepcopy(backbone.config), num_items=num_items, **config_overrides)
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
        **kwargs,
    ) -> IAMRecommendationOutput:
        r"""
        Args:
            item_segment_ids (`torch.LongTensor` of shape `(batch, sequence_length)`):
                0 for context tokens (prompt, query suffix, padding), 1..n for the tokens of the n history items.
                Required unless every layer is `full`.
            labels (`torch.LongTensor` of shape `(batch,)`, *optional*):
                Catalog index of each user's target item; gives a cross-entropy loss over the whole catalog.
            history_item_indices (`torch.LongTensor`, *optional*):
                Emitted by [`IAMDataCollator`] for evaluation (history exclusion); not used by the forward.
        """
        reference = input_ids if input_ids is not None else inputs_embeds
        check_forward_inputs(self.config, input_ids, inputs_embeds, attention_mask, item_segment_ids)
        if attention_mask is None:
            attention_mask = torch.ones(reference.shape[:2], dtype=torch.long, device=reference.device)
        if position_ids is None:
            # Positions count real tokens only, so a user's states do not depend on how much padding precedes them.
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        every_item = labels is not None and labels.dim() == 2
        if every_item and self.config.readout != "last_item":
            raise ValueError(
                "labels of shape (batch, items) are every-item targets, read at each item's last token: set "
                "config.readout='last_item' so that evaluation reads the same kind of position"
            )
        outputs = self._backbone_outputs(
            input_ids,
            attention_mask,
            position_ids,
            item_segment_ids,
            inputs_embeds=inputs_embeds,
            use_item_states=self._uses_item_states(input_ids, item_segment_ids),
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state

        if self.config.readout == "query":
            logits = self.adapter(gather_states(hidden_states, last_real_positions(attention_mask)))
        else:
            if item_segment_ids is None:
                raise ValueError("config.readout='last_item' reads item ends: pass item_segment_ids")
            item_ends = item_end_positions(item_segment_ids, attention_mask)
            last_items = item_ends.max(-1).values
            if (last_items < 0).any():
                row = int((last_items < 0).nonzero()[0, 0])
                raise ValueError(f"row {row} has no history item to read (config.readout='last_item')")
            logits = self.adapter(gather_states(hidden_states, last_items))

        loss = None
        if every_item:
            labels = labels.to(logits.device)
            if labels.shape != item_ends.shape:
                raise ValueError(
                    f"every-item labels have shape {tuple(labels.shape)} but the batch has {tuple(item_ends.shape)} "
                    "(batch, items): one target after each item, -100 where there is none"
                )
            targeted = labels != -100
            if (targeted & (item_ends < 0)).any():
                raise ValueError("every-item labels give a target after an item that is not in the row")
            self._check_catalog_indices(labels[targeted])
            item_logits = self.adapter(hidden_states[targeted.nonzero(as_tuple=True)[0], item_ends[targeted]])
            loss = nn.functional.cross_entropy(item_logits.float(), labels[targeted])
        elif labels is not None:
            labels = labels.to(logits.device).view(-1)
            if labels.numel() != logits.shape[0]:
                raise ValueError(f"labels has {labels.numel()} entries for a batch of {logits.shape[0]}")
            self._check_catalog_indices(labels)
            loss = nn.functional.cross_entropy(logits.float(), labels)
        return IAMRecommendationOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)

    def _check_catalog_indices(self, labels: torch.Tensor) -> None:
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.config.num_items):
            raise ValueError(
                f"labels must be catalog indices in [0, {self.config.num_items}), got "
                f"[{int(labels.min())}, {int(labels.max())}]"
            )

    def _uses_item_states(self, input_ids: torch.Tensor | None, item_segment_ids: torch.Tensor | None) -> bool:
        """Whether this forward computes the leading intra layers per item (cached or packed) rather than masked."""
        wanted = self.item_cache is not None or self.config.intra_implementation == "packed"
        return wanted and input_ids is not None and item_segment_ids is not None and self.num_leading_intra_layers > 0

    def _backbone_outputs(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        item_segment_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None = None,
        use_item_states: bool = False,
        **kwargs,
    ):
        if use_item_states:
            if self.item_cache is not None:
                self.item_cache.check_fresh()
            return forward_from_item_states(
                self.model,
                input_ids,
                attention_mask,
                position_ids,
                item_segment_ids,
                num_layers=self.num_leading_intra_layers,
                cache=self.item_cache,
                **kwargs,
            )
        if item_segment_ids is not None:
            kwargs["item_segment_ids"] = item_segment_ids
        return self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            **kwargs,
        )

    # -- item states computed once -----------------------------------------------------------
    @property
    def num_leading_intra_layers(self) -> int:
        """The intra layers at the bottom of the stack: the ones the item-state cache and packed attention cover."""
        return leading_intra_layers(self.config.resolved_layer_types)

    def enable_item_cache(self, collator: IAMDataCollator, batch_size: int = 256) -> ItemStateCache:
        """Compute every catalog item's states after the leading intra layers once, and use them in every forward.

        Exact (to float rounding) because in those layers an item sees only itself and rotary positions are
        relative: the forward, `recommend`, evaluation inside the `Trainer` and the pipeline then run only the layers
        above for item tokens. Refused, with the reason, when it could not be exact: no leading intra run, positions
        that are not rotary, or trainable cached layers or token embeddings (freeze them first). The cache checks at
        each forward that those weights have not changed since (docs/architecture.md, "Compute once").

        Example:
            >>> model.model.requires_grad_(False)  # doctest: +SKIP
            >>> model.enable_item_cache(collator)  # doctest: +SKIP
        """
        self.item_cache = build_item_cache(self, collator, batch_size)
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
