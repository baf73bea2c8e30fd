"""IAM model configuration.

A strict dataclass like every transformers config: field types and values are checked when the config is built and
whenever a field is assigned; the fields that depend on each other (the layer kinds and the backbone's depth) are
checked at construction, by ``config.validate()`` and before saving. No ``from __future__ import annotations`` here:
string annotations would silently turn the type checks off.
"""

from typing import Literal

from huggingface_hub.dataclasses import strict, validated_field
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.utils import logging
from transformers.utils.type_validators import interval, positive_int_field

from .masks import check_layer_types

logger = logging.get_logger(__name__)

IAM_LAYOUTS = ("stacked", "alternating", "hatllm", "vanilla")


def layer_types_for_layout(layout: str, num_layers: int) -> list[str]:
    """The per-layer kinds of a named layout.

    - ``stacked``: first half ``intra``, second half ``inter`` (the paper's stacked design);
    - ``alternating``: ``intra``, ``inter``, ``intra``, ...;
    - ``hatllm``: thirds: ``intra``, ``full``, ``inter`` (HatLLM, arXiv 2510.10955);
    - ``vanilla``: all ``full`` (the plain backbone: the baseline).

    Example:
        >>> layer_types_for_layout("hatllm", 6)
        ['intra', 'intra', 'full', 'full', 'inter', 'inter']
    """
    if layout not in IAM_LAYOUTS:
        raise ValueError(f"iam_layout must be one of {list(IAM_LAYOUTS)}, got {layout!r}")
    # with fewer layers a preset would silently become another layout (hatllm with 2 layers: all full)
    minimum = {"stacked": 2, "alternating": 2, "hatllm": 3, "vanilla": 1}[layout]
    if num_layers < minimum:
        raise ValueError(
            f"iam_layout={layout!r} needs at least {minimum} backbone layers, got {num_layers}; "
            "list one kind per layer in iam_layer_types instead"
        )
    if layout == "stacked":
        return ["intra"] * (num_layers // 2) + ["inter"] * (num_layers - num_layers // 2)
    if layout == "alternating":
        return ["intra" if index % 2 == 0 else "inter" for index in range(num_layers)]
    if layout == "hatllm":
        third = num_layers // 3
        return ["intra"] * third + ["full"] * (num_layers - 2 * third) + ["inter"] * third
    return ["full"] * num_layers


def check_item_level_options(config: "IAMConfig", layer_types: list[str]) -> None:
    """Refuse ``num_item_tokens`` and item id embeddings on layer kinds without a leading intra run: the states they
    act on are an item's own only after intra layers."""
    if layer_types and layer_types[0] == "intra":
        return
    for name in ("num_item_tokens", "use_item_id_embeddings"):
        value = getattr(config, name)
        if value not in (None, False):
            raise ValueError(
                f"{name}={value!r} needs a leading run of intra layers (an item's states are its own only after "
                f"intra layers); the layers are {layer_types}"
            )


# Options of transformers-iam 0.1.0 whose measured variants lost (docs/notebook.md, "Options that left the library"):
# a checkpoint that used one of them fails to load with a message naming it; at the value the library now always has
# they are dropped. `readout` became part of `supervision`.
REMOVED_OPTIONS = {
    "adapter_dropout": 0.0,
    "adapter_scoring": "dot",
    "item_token_positions": "original",
    "tie_item_id_embeddings": False,
    "item_id_dropout": 0.0,
    # the text-scored rows of probe p8 (docs/notebook.md): code until commit e5307ad
    "score_items_from_text": False,
    "item_residual_dropout": 0.0,
}
_REMOVED_IN = "transformers-iam 0.1.0 (the release before 0.2.0)"


def _removed_options(kwargs: dict, supervision: str) -> dict:
    """Pop the options of an older config from ``kwargs``; refuse one set to a value this release cannot compute."""
    removed = {}
    for name, kept_value in REMOVED_OPTIONS.items():
        if name in kwargs:
            value = kwargs.pop(name)
            if value != kept_value:
                raise ValueError(
                    f"{name}={value!r}: this option was removed after {_REMOVED_IN}, whose checkpoints with it load "
                    f"only there; this release computes {name}={kept_value!r} only"
                )
            removed[name] = value
    if "readout" in kwargs:
        readout = kwargs.pop("readout")
        expected = "last_item" if supervision == "every_item" else "query"
        if readout != expected:
            raise ValueError(
                f"readout={readout!r} with supervision={supervision!r}: readout was removed "
                f"after {_REMOVED_IN}; the adapter now reads where supervision says ({expected!r})"
            )
        removed["readout"] = readout
    return removed


def _check_layer_kinds(layer_types: list[str] | None) -> None:
    if layer_types is not None:
        check_layer_types(layer_types)


def _check_catalog_fingerprint(fingerprint: str | None) -> None:
    if fingerprint is not None and (
        len(fingerprint) != 64 or any(character not in "0123456789abcdef" for character in fingerprint)
    ):
        raise ValueError(
            f"catalog_fingerprint must be a sha256 hex digest (64 lowercase hex digits), got {fingerprint!r}"
        )


@strict
class IAMConfig(PreTrainedConfig):
    r"""
    Configuration of an [`IAMForCausalRecommendation`]: a decoder backbone whose attention layers are item-aware,
    plus a recommendation adapter scoring every item of the catalog.

    Args:
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            The decoder backbone's config: any decoder transformers ships (Llama, Qwen2, Mistral, ...). Defaults to
            a default `LlamaConfig`.
        num_items (`int`, *optional*, defaults to 1):
            Size of the item catalog the adapter scores.
        iam_layout (`str`, *optional*, defaults to `"stacked"`):
            A preset for the per-layer kinds: `stacked`, `alternating`, `hatllm` or `vanilla`.
        iam_layer_types (`list[str]`, *optional*):
            One kind per backbone layer (`intra`, `inter` or `full`). Wins over `iam_layout` when given.
        adapter_hidden_size (`int`, *optional*):
            Width of the adapter's projection and item embeddings. Defaults to the backbone's hidden size.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the adapter's weight initialisation.
        supervision (`str`, *optional*, defaults to `"last"`):
            What `labels` are, and where the adapter reads: `"last"`, one catalog index per example `(batch,)`, read
            at the last token of the query suffix; `"every_item"`, a target after every history item
            `(batch, items)` (`-100` where there is none), read at each item's last token, and evaluation reads the
            last item's end (the same kind of position).
        intra_implementation (`str`, *optional*, defaults to `"masked"`):
            How the leading intra layers run: `"masked"` (the whole prompt under an item-aware mask) or `"packed"`
            (each distinct item of the batch as a short sequence of its own; the same states, no mask).
        num_item_tokens (`int`, *optional*):
            The item-level inter half: the layers above the leading intra run see each history item through its
            last `num_item_tokens` token states only (1: one vector per item). `None` keeps every token (the paper's
            token-level model). Needs a leading intra run.
        use_item_id_embeddings (`bool`, *optional*, defaults to `False`):
            One learned vector per catalog item, added to the item's states where they enter the first layer above
            the leading intra run. Zero-initialised: an untrained model equals the text-only model, and an item with
            no training interactions keeps its zero vector. Needs `segment_item_indices` in the forward
            ([`IAMDataCollator`] emits it).
        item_id_embedding_size (`int`, *optional*):
            With `use_item_id_embeddings`, the width of each item's vector: a table of that width and one learned
            projection (no bias) to the backbone's hidden size, shared by all items, as ALBERT factorises its
            embeddings (SASRec's item vectors are 64 wide). Fewer parameters per item: a rarely seen item has less to
            fit, and a catalog of 1M items stores 1M x `item_id_embedding_size` floats instead of 1M x hidden size.
            The rows still start at 0. `None` (the default): vectors of the hidden size, no projection.
        num_sampled_negatives (`int`, *optional*):
            Train with a sampled softmax instead of the cross-entropy over the whole catalog: each target is scored
            against this many distinct items drawn by how often items are training targets, shared by the batch,
            with the logQ correction (`init_sampling_frequency` gives the training targets' counts). For large
            catalogs, where a `[targets x catalog]` score matrix does not fit: the head's scores are
            `[targets x (1 + num_sampled_negatives)]`. Evaluation still ranks the whole catalog. `None` (the
            default): full cross-entropy.
        sparse_item_gradients (`bool`, *optional*, defaults to `False`):
            With `num_sampled_negatives`, the per-item tables (the adapter's item rows and bias, the item id vectors)
            get sparse gradients in training: the rows a step read, not a zero row for every other item. With
            [`LazyAdamW`], which updates those rows only, a training step's time and memory no longer grow with the
            catalog (a dense AdamW step over 1M rows of 576 floats takes seconds on a CPU). Optimizers that take
            dense gradients only (the Trainer's AdamW, its gradient clipping) refuse sparse ones: use `LazyAdamW`
            with its `max_grad_norm`, as `examples/finetune.py` does.
        item_rows_from_text (`bool`, *optional*, defaults to `False`):
            Each item's adapter row and bias are a learned map of its text features (its states where items enter
            the layers above the leading intra run, mean and last, read alone; `init_item_text_features` computes
            them) plus a learned residual of its own. An item added after training
            ([`IAMForCausalRecommendation.add_items`]) has no residual: it is scored by the trained map of its text.
        new_item_dropout (`float`, *optional*, defaults to 0.0):
            With `item_rows_from_text`, the share of the catalog that plays new items at each training step: whole
            items lose their residual row, residual bias and id vector, as an item added after training has none
            (DropoutNet's dropout of ids). The text map then learns to place items on its own, in the distribution of
            the trained rows.
        catalog_fingerprint (`str`, *optional*):
            sha256 of the catalog's item ids in order (`ItemCatalog.fingerprint`), set by `set_catalog`: loading
            refuses an `item_catalog.json` that does not match it (docs/reliability.md).

    Example:
        >>> from transformers import LlamaConfig
        >>> config = IAMConfig(text_config=LlamaConfig(num_hidden_layers=4), num_items=1682)
        >>> config.resolved_layer_types
        ['intra', 'intra', 'inter', 'inter']
    """

    model_type = "iam"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama")}

    text_config: dict | PreTrainedConfig | None = None
    num_items: int = interval(min=1)(default=1)
    iam_layout: Literal["stacked", "alternating", "hatllm", "vanilla"] = "stacked"
    iam_layer_types: list[str] | None = validated_field(_check_layer_kinds, default=None)
    adapter_hidden_size: int | None = positive_int_field(default=None)
    initializer_range: int | float = interval(min=0.0)(default=0.02)
    supervision: Literal["last", "every_item"] = "last"
    intra_implementation: Literal["masked", "packed"] = "masked"
    num_item_tokens: int | None = positive_int_field(default=None)
    use_item_id_embeddings: bool = False
    item_id_embedding_size: int | None = positive_int_field(default=None)
    num_sampled_negatives: int | None = positive_int_field(default=None)
    sparse_item_gradients: bool = False
    item_rows_from_text: bool = False
    new_item_dropout: int | float = interval(min=0.0, max=1.0, exclude_max=True)(default=0.0)
    catalog_fingerprint: str | None = validated_field(_check_catalog_fingerprint, default=None)

    def validate_layer_layout(self):
        """The layer kinds fit the backbone: one per layer, or a preset that can be built for its depth; the options
        that need a leading intra run have one."""
        layer_types = self.resolved_layer_types
        if not layer_types:
            raise ValueError("the backbone has no layers (text_config.num_hidden_layers = 0)")
        check_item_level_options(self, layer_types)

    def validate_item_id_embedding_size(self):
        """A narrower id table is a table of the items' own id vectors."""
        if self.item_id_embedding_size is not None and not self.use_item_id_embeddings:
            raise ValueError(
                f"item_id_embedding_size={self.item_id_embedding_size!r} sets the width of the items' id vectors: "
                "set use_item_id_embeddings=True"
            )

    def validate_sparse_item_gradients(self):
        """Only the sampled loss reads a few rows per step: the full loss reads every item's row."""
        if self.sparse_item_gradients and self.num_sampled_negatives is None:
            raise ValueError(
                "sparse_item_gradients=True keeps the gradients of the rows a training step reads, which with the "
                "full cross-entropy is every item's: set num_sampled_negatives (the sampled loss) as well"
            )

    def validate_new_item_dropout(self):
        """Items play new ones by losing what a new item lacks: the residual of a row that comes from text."""
        if self.new_item_dropout > 0 and not self.item_rows_from_text:
            raise ValueError(
                f"new_item_dropout={self.new_item_dropout!r} drops the items' residuals on top of rows read from "
                "their text: set item_rows_from_text=True"
            )

    def __post_init__(self, **kwargs):
        for name, value in _removed_options(kwargs, self.supervision).items():
            logger.info(f"IAMConfig: {name}={value!r} (removed option, at its only remaining value) ignored")
        super().__post_init__(**kwargs)

    @property
    def num_backbone_layers(self) -> int:
        return self.text_config.num_hidden_layers

    @property
    def resolved_layer_types(self) -> list[str]:
        """The kind of every backbone layer: `iam_layer_types` if given, else the `iam_layout` preset."""
        if self.iam_layer_types is None:
            return layer_types_for_layout(self.iam_layout, self.num_backbone_layers)
        return check_layer_types(self.iam_layer_types, self.num_backbone_layers)

    @property
    def resolved_adapter_hidden_size(self) -> int:
        return self.adapter_hidden_size or self.text_config.hidden_size


__all__ = ["IAMConfig", "IAM_LAYOUTS", "layer_types_for_layout"]
