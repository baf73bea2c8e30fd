"""Shared tiny builders: backbone configs (Llama, Qwen2, Mistral), a word-level tokenizer, a synthetic catalog."""

from __future__ import annotations

import copy

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, MistralConfig, PreTrainedTokenizerFast, Qwen2Config

from transformers_iam import IAMConfig, IAMForCausalRecommendation, ItemCatalog

VOCAB_SIZE = 160
TINY = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=32,
    intermediate_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)
BACKBONES = {
    "llama": lambda layers: LlamaConfig(num_hidden_layers=layers, **TINY),
    "qwen2": lambda layers: Qwen2Config(num_hidden_layers=layers, use_sliding_window=False, **TINY),
    "mistral": lambda layers: MistralConfig(num_hidden_layers=layers, sliding_window=256, **TINY),
}


def tiny_text_config(backbone: str = "llama", num_layers: int = 4):
    return BACKBONES[backbone](num_layers)


def tiny_model(
    backbone: str = "llama", num_layers: int = 4, num_items: int = 20, seed: int = 0, attn_implementation=None, **overrides
) -> IAMForCausalRecommendation:
    torch.manual_seed(seed)
    config = IAMConfig(text_config=tiny_text_config(backbone, num_layers), num_items=num_items, **overrides)
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    return IAMForCausalRecommendation(config).eval()


def same_weights_with(model: IAMForCausalRecommendation, **overrides) -> IAMForCausalRecommendation:
    """A copy of `model` with the same weights and a different config (layout, attention backend)."""
    config = copy.deepcopy(model.config)
    attn_implementation = overrides.pop("attn_implementation", None)
    for key, value in overrides.items():
        setattr(config, key, value)
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    other = IAMForCausalRecommendation(config).eval()
    other.load_state_dict(model.state_dict())
    return other


def word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A real fast tokenizer over a fixed word list (ids below VOCAB_SIZE), no download needed."""
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {token: index for index, token in enumerate(specials + sorted(set(words)))}
    assert len(vocab) <= VOCAB_SIZE
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def synthetic_catalog(num_items: int = 20) -> ItemCatalog:
    """Items of 1 to 3 words, so items have different token lengths."""
    texts = [" ".join(f"w{item}_{part}" for part in range(1 + item % 3)) for item in range(num_items)]
    return ItemCatalog([f"i{item}" for item in range(num_items)], texts)


PROMPT_WORDS = ["user", "history", ":", "next", "?"]


@pytest.fixture
def catalog() -> ItemCatalog:
    return synthetic_catalog()


@pytest.fixture
def tokenizer(catalog) -> PreTrainedTokenizerFast:
    return word_tokenizer([word for text in catalog.texts for word in text.split()] + PROMPT_WORDS)


def collator_kwargs() -> dict:
    return dict(prompt="user history :", query="next ?", item_template="{text}")
