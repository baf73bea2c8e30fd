"""Where checkpoint files are found (a folder or a Hub repo) and pretrained decoders loaded and cut to their first
layers."""

from __future__ import annotations

import os

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from transformers import AutoModel, AutoModelForCausalLM, PreTrainedModel

from .attention import find_decoder_layers


def optional_checkpoint_file(
    path_or_repo_id: str | os.PathLike,
    filename: str,
    subfolder: str = "",
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> str | None:
    """The path of ``filename`` in a checkpoint folder or a Hub repo (downloaded or cached), or ``None`` if absent.

    Absent means: not in the folder; on the Hub, not in the repo (404) or, offline, not in the cache. Other errors
    (no such repo, no access) propagate, as in ``from_pretrained``.

    Example:
        >>> optional_checkpoint_file(".", "no-such-file.json") is None
        True
    """
    path = os.fspath(path_or_repo_id)
    if os.path.isdir(path):
        candidate = os.path.join(path, subfolder, filename)
        return candidate if os.path.isfile(candidate) else None
    try:
        return hf_hub_download(
            path,
            filename,
            subfolder=subfolder or None,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            force_download=force_download,
        )
    except EntryNotFoundError:  # a 404 online, or offline and not cached
        return None


HUB_ARGUMENTS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")


def hub_arguments(kwargs: dict) -> dict:
    """The Hub arguments among ``from_pretrained``'s keyword arguments (where and how a file is fetched)."""
    return {key: kwargs[key] for key in HUB_ARGUMENTS if key in kwargs}


def load_pretrained_decoder(
    pretrained_model_name_or_path: str | os.PathLike,
    gguf_file: str | None = None,
    num_layers: int | None = None,
    dtype: torch.dtype = torch.float32,
    causal_lm: bool = False,
) -> PreTrainedModel:
    """A pretrained decoder (the bare decoder, or with its LM head when ``causal_lm``) cut to its first ``num_layers``.

    GGUF weights arrive dequantised: the ``quantization_config`` transformers keeps for them is dropped,
    else a saved checkpoint (and the Trainer) would treat the full-precision model as a quantized one.

    Example (SmolLM2 from its GGUF file: ``load_pretrained_decoder(smollm2_directory(), gguf_file=SMOLLM2_GGUF,
    num_layers=6, causal_lm=True)``; here a tiny random Llama saved in ``backbone``):
        >>> decoder = load_pretrained_decoder(backbone, num_layers=2)
        >>> type(decoder).__name__, len(decoder.layers), decoder.config.num_hidden_layers
        ('LlamaModel', 2, 2)
    """
    auto_class = AutoModelForCausalLM if causal_lm else AutoModel
    model = auto_class.from_pretrained(pretrained_model_name_or_path, gguf_file=gguf_file, dtype=dtype)
    if not causal_lm and hasattr(model, "get_decoder") and not hasattr(model, "layers"):
        model = model.get_decoder()  # an encoder-decoder-style wrapper: its decoder
    model.config.__dict__.pop("quantization_config", None)
    model.hf_quantizer, model.is_quantized = None, False
    if num_layers is not None:
        backbone, layers = find_decoder_layers(model)
        if not 1 <= num_layers <= len(layers):
            raise ValueError(f"num_backbone_layers must be in [1, {len(layers)}], got {num_layers}")
        backbone.layers = layers[:num_layers]
        model.config.num_hidden_layers = num_layers
        if getattr(model.config, "layer_types", None) is not None:
            model.config.layer_types = model.config.layer_types[:num_layers]
    return model


__all__ = ["hub_arguments", "load_pretrained_decoder", "optional_checkpoint_file"]
