"""IAM: a transformers decoder with item-aware attention and a recommendation adapter."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import ModelOutput, cached_file

from .attention import enable_item_aware_attention, item_aware_implementation
from .catalog import CATALOG_FILE_NAME, ItemCatalog
from .configuration_iam import IAMConfig
from .loading import load_pretrained_decoder
from .ranking import exclude_items


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


class IAMRecommendationAdapter(nn.Module):
    """Maps the pooled final hidden state to one score per catalog item.

    A projection (dense, GELU, LayerNorm) followed by a dot product with one learned
    embedding per item; the bias is a learned per-item prior (popularity).
    """

    def __init__(self, config: IAMConfig):
        super().__init__()
        adapter_size = config.resolved_adapter_hidden_size
        self.dropout = nn.Dropout(config.adapter_dropout)
        self.dense = nn.Linear(config.text_config.hidden_size, adapter_size)
        self.activation = nn.GELU()
        self.norm = nn.LayerNorm(adapter_size)
        self.item_embeddings = nn.Linear(adapter_size, config.num_items)

    def forward(self, pooled_hidden_state: torch.Tensor) -> torch.Tensor:
        projected = self.norm(self.activation(self.dense(self.dropout(pooled_hidden_state))))
        return self.item_embeddings(projected)


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
        # `_attn_implementation` is not saved with the config, so a reloaded model would silently run plain
        # attention: always map the requested backend to its item-aware twin here.
        implementation = item_aware_implementation(config._attn_implementation)
        config._attn_implementation_internal = implementation
        config.text_config._attn_implementation_internal = implementation
        self.model = AutoModel.from_config(config.text_config, attn_implementation=implementation)
        enable_item_aware_attention(self.model, config.resolved_layer_types)
        self.adapter = IAMRecommendationAdapter(config)
        self.catalog: ItemCatalog | None = None
        self.post_init()

    # -- attention backend -------------------------------------------------------------------
    def set_attn_implementation(self, attn_implementation: str | dict, **kwargs):
        if isinstance(attn_implementation, str):
            attn_implementation = item_aware_implementation(attn_implementation)
        return super().set_attn_implementation(attn_implementation, **kwargs)

    def set_iam_layer_types(self, layer_types: list[str]) -> None:
        """Switch the per-layer kinds of this model in place (same weights), e.g. for an ablation."""
        self.config.iam_layer_types = list(layer_types)
        try:
            enable_item_aware_attention(self.model, self.config.resolved_layer_types)
        except ValueError:
            self.config.iam_layer_types = None
            raise

    @torch.no_grad()
    def init_item_prior(self, item_counts: torch.Tensor) -> None:
        """Start the adapter's per-item bias at the log-frequency of each item (counts in catalog order).

        With a zero bias a fresh adapter ranks the catalog at random; starting from the
        training-split popularity lets training spend its steps on personalisation.
        """
        item_counts = torch.as_tensor(item_counts, dtype=torch.float32).view(-1)
        if item_counts.numel() != self.config.num_items:
            raise ValueError(f"item_counts has {item_counts.numel()} entries for {self.config.num_items} catalog items")
        if (item_counts < 0).any():
            raise ValueError("item_counts must be non-negative")
        prior = torch.log((item_counts + 1.0) / (item_counts + 1.0).sum())
        bias = self.adapter.item_embeddings.bias
        bias.copy_((prior - prior.mean()).to(bias.dtype))

    @torch.no_grad()
    def init_item_embeddings_from_text(
        self, item_token_ids: list[list[int]], batch_size: int = 64, scale: float = 0.1
    ) -> None:
        """Start each item's embedding from the backbone's reading of the item's text.

        Each item's tokens (e.g. ``collator.item_token_ids(index)``) are encoded alone, mean-pooled
        and passed through the adapter's own projection, so a user state and an item text meet in
        one space: items with similar text score alike before any training, and a catalog far
        larger than the training set still gets informed embeddings. Each embedding gets norm
        ``scale``: with the adapter's LayerNorm output of norm ``sqrt(hidden)``, initial scores are
        ``scale * sqrt(hidden) * cosine`` (about +-2.4 for hidden 576), the spread of a log-popularity prior.
        """
        if len(item_token_ids) != self.config.num_items:
            raise ValueError(f"got token ids for {len(item_token_ids)} items, the catalog has {self.config.num_items}")
        was_training = self.training
        self.eval()
        device = self.adapter.item_embeddings.weight.device
        embeddings = []
        for start in range(0, len(item_token_ids), batch_size):
            chunk = item_token_ids[start : start + batch_size]
            width = max(len(ids) for ids in chunk)
            input_ids = torch.zeros(len(chunk), width, dtype=torch.long, device=device)
            attention_mask = torch.zeros_like(input_ids)
            for row, ids in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.tensor(ids, device=device)
                attention_mask[row, : len(ids)] = 1
            # segment 0 everywhere: every layer is plain causal for an item read on its own
            states = self.model(
                input_ids=input_ids, attention_mask=attention_mask, item_segment_ids=torch.zeros_like(input_ids)
            ).last_hidden_state
            pooled = (states * attention_mask[..., None]).sum(1) / attention_mask.sum(1, keepdim=True)
            adapter = self.adapter
            embeddings.append(adapter.norm(adapter.activation(adapter.dense(pooled))))
        embeddings = torch.cat(embeddings)
        embeddings = embeddings - embeddings.mean(0, keepdim=True)
        embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        weight = self.adapter.item_embeddings.weight
        weight.copy_((embeddings * scale).to(weight.dtype))
        self.train(was_training)

    # -- catalog -----------------------------------------------------------------------------
    def set_catalog(self, catalog: ItemCatalog) -> None:
        """Attach the catalog whose order the adapter's scores follow."""
        if len(catalog) != self.config.num_items:
            raise ValueError(
                f"The catalog has {len(catalog)} items but this model scores {self.config.num_items} "
                "(config.num_items): they must be the same catalog, in the same order."
            )
        self.catalog = catalog

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.catalog is not None and kwargs.get("is_main_process", True):
            self.catalog.save(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        hub_kwargs = {
            key: kwargs[key]
            for key in ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
            if key in kwargs
        }
        catalog_file = cached_file(
            pretrained_model_name_or_path,
            CATALOG_FILE_NAME,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **hub_kwargs,
        )
        if catalog_file is not None:
            model.set_catalog(ItemCatalog.load(catalog_file))
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
        config = IAMConfig(text_config=copy.deepcopy(backbone.config), num_items=num_items, **config_overrides)
        if attn_implementation is not None:
            config._attn_implementation = attn_implementation
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
        if reference is None:
            raise ValueError("Pass input_ids or inputs_embeds")
        if item_segment_ids is None and any(kind != "full" for kind in self.config.resolved_layer_types):
            raise ValueError(
                "item_segment_ids is required: this model has item-aware layers "
                f"({self.config.resolved_layer_types}). IAMDataCollator emits it."
            )
        if item_segment_ids is not None and item_segment_ids.shape != reference.shape[:2]:
            raise ValueError(
                f"item_segment_ids has shape {tuple(item_segment_ids.shape)} "
                f"but the inputs have {tuple(reference.shape[:2])}"
            )
        if attention_mask is None:
            attention_mask = torch.ones(reference.shape[:2], dtype=torch.long, device=reference.device)
        if position_ids is None:
            # Positions count real tokens only, so a user's states do not depend on how much padding precedes them.
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        if item_segment_ids is not None:
            kwargs["item_segment_ids"] = item_segment_ids
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            use_cache=False,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        # The last real token is the query token whatever the padding side.
        last_positions = attention_mask.shape[1] - 1 - attention_mask.long().flip(-1).argmax(-1)
        pooled = hidden_states[torch.arange(hidden_states.shape[0], device=hidden_states.device), last_positions]
        logits = self.adapter(pooled)

        loss = None
        if labels is not None:
            labels = labels.to(logits.device).view(-1)
            if labels.numel() != logits.shape[0]:
                raise ValueError(f"labels has {labels.numel()} entries for a batch of {logits.shape[0]}")
            if labels.min() < 0 or labels.max() >= self.config.num_items:
                raise ValueError(
                    f"labels must be catalog indices in [0, {self.config.num_items}), got "
                    f"[{int(labels.min())}, {int(labels.max())}]"
                )
            loss = nn.functional.cross_entropy(logits.float(), labels)
        return IAMRecommendationOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)

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
        if not 1 <= k <= self.config.num_items:
            raise ValueError(f"k must be in [1, {self.config.num_items}], got {k}")
        kwargs.pop("labels", None)
        kwargs.pop("history_item_indices", None)
        logits = self(
            input_ids=input_ids, attention_mask=attention_mask, item_segment_ids=item_segment_ids, **kwargs
        ).logits.float()
        if exclude_item_ids is not None:
            logits = exclude_items(logits, exclude_item_ids)
        scores, indices = logits.topk(k, dim=-1)
        item_ids = [self.catalog.ids_of(row) for row in indices.tolist()] if self.catalog is not None else None
        return IAMRecommendations(scores=scores, indices=indices, item_ids=item_ids)


__all__ = [
    "IAMForCausalRecommendation",
    "IAMPreTrainedModel",
    "IAMRecommendationAdapter",
    "IAMRecommendationOutput",
    "IAMRecommendations",
]
