"""IAM model configuration."""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .masks import LAYER_TYPES

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
    if layout == "stacked":
        return ["intra"] * (num_layers // 2) + ["inter"] * (num_layers - num_layers // 2)
    if layout == "alternating":
        return ["intra" if index % 2 == 0 else "inter" for index in range(num_layers)]
    if layout == "hatllm":
        third = num_layers // 3
        return ["intra"] * third + ["full"] * (num_layers - 2 * third) + ["inter"] * third
    return ["full"] * num_layers


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
        adapter_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the pooled state before the adapter.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the adapter's weight initialisation.

    Example:
        >>> from transformers import LlamaConfig
        >>> config = IAMConfig(text_config=LlamaConfig(num_hidden_layers=4), num_items=1682)
        >>> config.resolved_layer_types
        ['intra', 'intra', 'inter', 'inter']
    """

    model_type = "iam"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama")}

    text_config: dict | PreTrainedConfig | None = None
    num_items: int = 1
    iam_layout: str = "stacked"
    iam_layer_types: list[str] | None = None
    adapter_hidden_size: int | None = None
    adapter_dropout: float = 0.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if not isinstance(self.num_items, int) or isinstance(self.num_items, bool) or self.num_items < 1:
            raise ValueError(f"num_items must be an integer >= 1 (the catalog size), got {self.num_items!r}")
        if self.iam_layout not in IAM_LAYOUTS:
            raise ValueError(f"iam_layout must be one of {list(IAM_LAYOUTS)}, got {self.iam_layout!r}")
        if self.adapter_hidden_size is not None and self.adapter_hidden_size < 1:
            raise ValueError(f"adapter_hidden_size must be >= 1, got {self.adapter_hidden_size!r}")
        if not 0.0 <= self.adapter_dropout < 1.0:
            raise ValueError(f"adapter_dropout must be in [0, 1), got {self.adapter_dropout!r}")
        self.resolved_layer_types  # validates iam_layer_types against the backbone

    @property
    def num_backbone_layers(self) -> int:
        return self.text_config.num_hidden_layers

    @property
    def resolved_layer_types(self) -> list[str]:
        """The kind of every backbone layer: `iam_layer_types` if given, else the `iam_layout` preset."""
        if self.iam_layer_types is None:
            return layer_types_for_layout(self.iam_layout, self.num_backbone_layers)
        layer_types = list(self.iam_layer_types)
        if len(layer_types) != self.num_backbone_layers:
            raise ValueError(
                f"iam_layer_types has {len(layer_types)} entries but the backbone has "
                f"{self.num_backbone_layers} layers (text_config.num_hidden_layers)"
            )
        for index, layer_type in enumerate(layer_types):
            if layer_type not in LAYER_TYPES:
                raise ValueError(f"iam_layer_types[{index}] = {layer_type!r}; allowed values: {list(LAYER_TYPES)}")
        return layer_types

    @property
    def resolved_adapter_hidden_size(self) -> int:
        return self.adapter_hidden_size or self.text_config.hidden_size


__all__ = ["IAMConfig", "IAM_LAYOUTS", "layer_types_for_layout"]
