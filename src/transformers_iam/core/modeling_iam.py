"""IAM: a transformers decoder with item-aware attention and a recommendation adapter.

The model reads like a transformers model: ``forward`` runs the backbone (by the plan of ``core/forward_plan.py``),
reads it where the supervision says (``core/readout.py``), scores the catalog (``core/adapter.py``) and computes the
loss. The catalog's lifecycle is ``core/catalog_lifecycle.py``, the item-state cache's ``core/item_cache_lifecycle.py``.
"""

from __future__ import annotations

import copy
import functools
import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, logging

from .adapter import IAMRecommendationAdapter, TextToItemRows
from .attention import current_attn_implementation, enable_item_aware_attention, item_aware_implementation
from .catalog import ItemCatalog, checkpoint_catalog, remove_stale_catalog
from .catalog_lifecycle import CatalogMixin
from .configuration_iam import IAMConfig, check_item_level_options
from .decoder import decoder_parts
from .forward_plan import ForwardPath, ForwardPlan, choose_plan, leading_intra_layers
from .inputs import BackboneInputs, check_recommend_inputs, recommend_forward_arguments
from .item_cache import ItemStateCache
from .item_cache_lifecycle import ItemCacheMixin
from .item_ids import ItemIdEmbeddings
from .item_states import item_aware_forward
from .loading import hub_arguments, load_pretrained_decoder
from .losses import catalog_cross_entropy, sampled_softmax_cross_entropy, targeted_states
from .masks import check_layer_types
from .ranking import check_exclusions, check_items_left, model_top_k, ranking_chunk_size
from .readout import gather_states, item_end_positions, last_real_positions

logger = logging.get_logger(__name__)


@dataclass
class IAMRecommendationOutput(ModelOutput):
    """Output of [`IAMForCausalRecommendation.forward`].

    Args:
        loss: cross-entropy over the whole catalog, when `labels` are given (in training with
            `config.num_sampled_negatives`, over the sampled candidates).
        logits: `(batch, num_items)` scores, one per catalog item (`None` in training with sampled negatives).
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
        elif isinstance(module, TextToItemRows):  # zero: at first every item's row is its own (its residual)
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)
        # the sampled loss's item frequencies start uniform; a checkpoint saved without them (a model trained with
        # the full loss, fine-tuned with the sampled one) would otherwise leave uninitialised memory there
        log_frequency = getattr(module, "item_log_frequency", None)
        if isinstance(log_frequency, torch.Tensor):
            init.zeros_(log_frequency)


class IAMForCausalRecommendation(CatalogMixin, ItemCacheMixin, IAMPreTrainedModel):
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
        self.item_id_embeddings: ItemIdEmbeddings | None = None
        if config.use_item_id_embeddings:
            self.item_id_embeddings = ItemIdEmbeddings.from_config(config, config.num_items)
        self.adapter = IAMRecommendationAdapter(config)
        if config.num_sampled_negatives is not None:  # the logQ correction's item frequencies (uniform until set)
            self.register_buffer("item_log_frequency", torch.zeros(config.num_items))
        self.catalog: ItemCatalog | None = None
        self.item_cache: ItemStateCache | None = None
        self.post_init()
        self.set_attn_implementation(implementation)  # this config and the backbone's, through the public route

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

    @property
    def num_leading_intra_layers(self) -> int:
        """The intra layers at the bottom of the stack: the ones the item-state cache and packed attention cover."""
        return leading_intra_layers(self.config.resolved_layer_types)

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
            >>> # backbone: a decoder's folder or Hub id ("HuggingFaceTB/SmolLM2-135M"), here a tiny random Llama
            >>> model = IAMForCausalRecommendation.from_backbone(backbone, catalog=catalog, iam_layout="stacked")
            >>> model.config.num_items, model.config.resolved_layer_types
            (20, ['intra', 'intra', 'inter', 'inter'])
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
        segment_item_indices: torch.LongTensor | None = None,
        path: ForwardPath | str | None = None,
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
            path (`ForwardPath` or `str`, *optional*):
                How the leading intra layers run: `"masked"` (the reference), `"packed"` or `"cached"`; by default the
                model chooses (its cache when attached, else `config.intra_implementation`). Every path gives the
                same outputs to float rounding (`core/forward_plan.py`).
            kwargs: passed to the backbone's own forward on the masked path (attention kwargs of transformers).
        """
        kept_items = self.simulated_new_items()
        backbone = self.backbone_forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            item_segment_ids=item_segment_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            segment_item_indices=segment_item_indices,
            output_hidden_states=bool(output_hidden_states),
            path=path,
            kept_items=kept_items,
            **kwargs,
        )
        pooled, item_ends = self._read(backbone)
        if labels is not None and self.training and self.config.num_sampled_negatives is not None:
            # no [batch x catalog] scores in training: the head scores the sampled candidates only
            states, targets = targeted_states(
                pooled, backbone.last_hidden_state, labels, item_ends, self.config.num_items
            )
            loss = sampled_softmax_cross_entropy(
                self.adapter,
                states,
                targets,
                self.config.num_sampled_negatives,
                self.item_log_frequency,
                kept_items=kept_items,
            )
            return IAMRecommendationOutput(loss=loss, logits=None, hidden_states=backbone.hidden_states)
        score = functools.partial(self.adapter, keep=kept_items)
        logits = score(pooled)
        loss = None
        if labels is not None:
            loss = catalog_cross_entropy(
                score, logits, backbone.last_hidden_state, labels, item_ends, self.config.num_items
            )
        return IAMRecommendationOutput(loss=loss, logits=logits, hidden_states=backbone.hidden_states)

    def simulated_new_items(self) -> torch.Tensor | None:
        """In training with ``config.new_item_dropout``: ``(num_items,)`` bool, the items that keep their residual row,
        bias and id vector this step; the others play items added after training (scored from their text alone).
        ``None`` otherwise: every item keeps everything."""
        if not self.training or self.config.new_item_dropout == 0:
            return None
        device = self.adapter.item_embeddings.weight.device
        return torch.rand(self.config.num_items, device=device) >= self.config.new_item_dropout

    def _read(self, backbone: IAMBackboneOutput) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The state the adapter reads in each row (``config.supervision``): at the query's last token, or at the last
        item's end; and every item's end, for every-item targets."""
        if self.config.supervision == "last":
            return gather_states(backbone.last_hidden_state, last_real_positions(backbone.attention_mask)), None
        item_ends = item_end_positions(backbone.item_segment_ids, backbone.attention_mask)
        read = item_ends.max(-1).values
        if (read < 0).any():
            row = int((read < 0).nonzero()[0, 0])
            raise ValueError(f"row {row} has no history item to read (config.supervision='every_item' reads item ends)")
        return gather_states(backbone.last_hidden_state, read), item_ends

    def user_states(self, **inputs) -> torch.Tensor:
        """``(batch, adapter_hidden)``: each user's state, read as ``forward`` reads it (``inputs``: its own, without
        ``labels``), so ``forward(...).logits == F.linear(user_states(...), *adapter.item_rows())``: what a catalog
        too large for one ``[users x items]`` matrix is ranked from (``core/ranking.py``,
        ``integrations/item_index.py``)."""
        return self.adapter.project(self._read(self.backbone_forward(**inputs))[0])

    def backbone_forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        item_segment_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        segment_item_indices: torch.LongTensor | None = None,
        output_hidden_states: bool = False,
        path: ForwardPath | str | None = None,
        cache: ItemStateCache | None = None,
        kept_items: torch.Tensor | None = None,
        **kwargs,
    ) -> IAMBackboneOutput:
        """The backbone's final states where the adapter reads them, by the plan this call's inputs and ``path`` give
        (``cache``: read this cache instead of the attached one). Every path gives the masked path's states, to float
        rounding. ``kept_items``: the items whose id vectors are added (``simulated_new_items``; all by default).

        Example:
            >>> out = model.backbone_forward(**collator([{"history": ["i1", "i2"]}]), path="masked")
            >>> out.last_hidden_state.shape[0], out.attention_mask.shape == out.last_hidden_state.shape[:2]
            (1, True)
        """
        inputs = BackboneInputs.checked(
            self.config, input_ids, attention_mask, item_segment_ids, position_ids, inputs_embeds, segment_item_indices
        )
        plan = self.forward_plan(inputs, output_hidden_states, path, cache)
        if plan.runs_backbone_forward:
            return self._reference_forward(inputs, output_hidden_states, **kwargs)
        if kwargs:
            raise TypeError(f"unexpected arguments for this model's forward: {sorted(kwargs)}")
        if plan.cache is not None:
            plan.cache.check(plan.num_leading_intra, plan.num_item_tokens, current_attn_implementation(self.config))
        output = item_aware_forward(decoder_parts(self.model), plan, inputs, self._item_id_vectors(kept_items))
        layout = output.layout
        return IAMBackboneOutput(
            output.last_hidden_state, layout.attention_mask, layout.item_segment_ids, output.hidden_states
        )

    def _item_id_vectors(self, kept_items: torch.Tensor | None):
        """Catalog indices to id vectors, zero for the items not in ``kept_items`` (when given)."""
        table = self.item_id_embeddings
        if table is None or kept_items is None:
            return table

        def kept_vectors(items: torch.Tensor) -> torch.Tensor:
            vectors = table(items)
            return vectors * kept_items[items][..., None].to(vectors.dtype)

        return kept_vectors

    def forward_plan(
        self,
        inputs: BackboneInputs,
        output_hidden_states: bool = False,
        path: ForwardPath | str | None = None,
        cache: ItemStateCache | None = None,
    ) -> ForwardPlan:
        """How a forward of ``inputs`` runs (``core/forward_plan.py``): chosen here, from the config, the attached
        item-state cache (or ``cache``) and the inputs."""
        per_item = (
            inputs.input_ids is not None and inputs.item_segment_ids is not None and self.num_leading_intra_layers > 0
        )
        return choose_plan(self.config, cache or self.item_cache, per_item, output_hidden_states, path)

    def _reference_forward(self, inputs: BackboneInputs, output_hidden_states: bool, **kwargs) -> IAMBackboneOutput:
        """The masked path: the backbone's own forward, every layer over the whole prompt under item-aware masks."""
        if inputs.item_segment_ids is not None:
            kwargs["item_segment_ids"] = inputs.item_segment_ids
        outputs = self.model(
            input_ids=inputs.input_ids,
            attention_mask=inputs.attention_mask,
            position_ids=inputs.position_ids,
            inputs_embeds=inputs.inputs_embeds,
            use_cache=False,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        segments = inputs.item_segment_ids
        if segments is None:
            segments = torch.zeros_like(inputs.attention_mask)
        return IAMBackboneOutput(outputs.last_hidden_state, inputs.attention_mask, segments, outputs.hidden_states)

    @torch.no_grad()
    def recommend(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        item_segment_ids: torch.LongTensor | None = None,
        k: int = 10,
        exclude_item_ids: torch.LongTensor | list[list[int]] | None = None,
        chunk_size: int | None = None,
        **kwargs,
    ) -> IAMRecommendations:
        """Top-k catalog items for each user.

        Every input is checked before the forward runs, each error naming the argument (and, for exclusions, the
        user row and value): ``input_ids`` a 2-D integer tensor ``[batch, tokens]``; ``attention_mask`` and
        ``item_segment_ids`` integer tensors of the same shape (the mask 0/1); ``k`` an int in ``[1, num_items]``;
        ``kwargs`` only what the forward reads besides these (``segment_item_indices``, ``position_ids``,
        ``inputs_embeds``, ``path``) or what the collator emits and recommend ignores (``labels``,
        ``history_item_indices``): a misspelt exclusion argument would otherwise be dropped without a word.

        Args:
            exclude_item_ids: catalog indices never to recommend, per user: a list of lists of ints, or a
                `(batch, n)` integer tensor padded with -1 (the collator's `history_item_indices`).
            chunk_size: score this many items at a time (`core.ranking.chunked_topk`: the same top-k, no `[batch x
                items]` matrix); by default 65,536 over 262,144 items, else one matrix (`core/ranking.py`).

        Example:
            >>> batch = collator([{"history": ["i1", "i7"]}])
            >>> model.recommend(**batch, k=5, exclude_item_ids=batch["history_item_indices"]).item_ids
            [['i3', 'i11', 'i17', 'i18', 'i2']]
            >>> model.recommend(**batch, k=5, exclude_item_ids=batch["history_item_indices"], chunk_size=8).item_ids
            [['i3', 'i11', 'i17', 'i18', 'i2']]
        """
        num_items = self.config.num_items
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_items:
            raise ValueError(f"k must be an int in [1, {num_items}] (config.num_items), got {k!r}")
        chunk_size = ranking_chunk_size(chunk_size, num_items)
        kwargs = recommend_forward_arguments(kwargs)
        batch_size = check_recommend_inputs(input_ids, attention_mask, item_segment_ids, kwargs)
        if exclude_item_ids is not None:  # before the forward: a bad exclusion should not cost a whole forward
            exclude_item_ids = check_exclusions(exclude_item_ids, batch_size, num_items, "exclude_item_ids")
            check_items_left(exclude_item_ids, k, num_items)  # topk would fill the places left with excluded items
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, item_segment_ids=item_segment_ids, **kwargs)
        scores, indices = model_top_k(self, inputs, k, exclude_item_ids, chunk_size)
        item_ids = [self.catalog.ids_of(row) for row in indices.tolist()] if self.catalog is not None else None
        return IAMRecommendations(scores=scores, indices=indices, item_ids=item_ids)


__all__ = [
    "IAMForCausalRecommendation",
    "IAMPreTrainedModel",
    "IAMRecommendationOutput",
    "IAMRecommendations",
]
