"""Item states computed once: the item-state cache and packed intra attention give the masked forward's outputs."""

from __future__ import annotations

import pytest
import torch

from transformers_iam import IAMDataCollator

from ..testing_utils import BACKBONES, collator_kwargs, same_weights_with, tiny_model

HISTORIES = [
    {"history": ["i3", "i1"], "target": "i4"},
    {"history": [f"i{k}" for k in range(12)], "target": "i2"},
    {"history": ["i7", "i7", "i9", "i5"], "target": "i3"},  # an item twice: one span each, same states
]


def make_collator(tokenizer, catalog, padding_side: str, max_length: int = 64, **kwargs) -> IAMDataCollator:
    return IAMDataCollator(
        tokenizer, catalog, max_length=max_length, padding_side=padding_side, **collator_kwargs(), **kwargs
    )


def frozen_model(backbone: str, layout: str, num_layers: int = 6, **overrides):
    model = tiny_model(backbone, num_layers=num_layers, iam_layout=layout, **overrides)
    model.model.requires_grad_(False)
    return model


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("layout", ["stacked", "hatllm"])
def test_cache_gives_the_masked_logits(backbone, padding_side, layout, tokenizer, catalog):
    # max_length 24 cuts the 12-item history: the cache must hold for truncated histories too
    collator = make_collator(tokenizer, catalog, padding_side, max_length=24, max_item_tokens=4)
    model = frozen_model(backbone, layout)
    batch = collator(HISTORIES)
    assert batch["attention_mask"].sum(-1).min() < batch["input_ids"].shape[1]  # padding present
    with torch.no_grad():
        masked = model(**batch).logits
        cache = model.enable_item_cache(collator)
        cached = model(**batch).logits
    assert cache.num_layers == model.num_leading_intra_layers > 0 and cache.num_items == len(catalog)
    torch.testing.assert_close(cached, masked, atol=1e-4, rtol=1e-4)
    # and the cache is really used: corrupting it changes the logits
    cache.states.add_(1.0)
    with torch.no_grad():
        assert not torch.allclose(model(**batch).logits, masked, atol=1e-3)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("layout", ["stacked", "hatllm", "alternating"])
def test_packed_intra_gives_the_masked_states(backbone, layout, tokenizer, catalog):
    collator = make_collator(tokenizer, catalog, "left", max_length=40)
    masked = tiny_model(backbone, num_layers=6, iam_layout=layout)
    packed = same_weights_with(masked, intra_implementation="packed")
    batch = collator(HISTORIES)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = masked(**batch, output_hidden_states=True)
        got = packed(**batch, output_hidden_states=True)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.hidden_states[-1][real], expected.hidden_states[-1][real], atol=1e-4, rtol=1e-4)


def test_packed_intra_trains_the_intra_layers(tokenizer, catalog):
    collator = make_collator(tokenizer, catalog, "right")
    masked = tiny_model(num_layers=4)
    packed = same_weights_with(masked, intra_implementation="packed")
    batch = collator(HISTORIES)
    masked(**batch).loss.backward()
    packed(**batch).loss.backward()
    for (name, a), (_, b) in zip(masked.named_parameters(), packed.named_parameters()):
        assert b.grad is not None, name
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_cache_refuses_what_it_cannot_serve_exactly(tokenizer, catalog):
    collator = make_collator(tokenizer, catalog, "left")
    with pytest.raises(ValueError, match="no leading intra run"):
        frozen_model("llama", "alternating", iam_layer_types=["inter", "intra", "inter", "intra", "full", "full"])
        tiny_model(num_layers=2, iam_layer_types=["inter", "intra"]).enable_item_cache(collator)
    trainable = tiny_model(num_layers=4)
    with pytest.raises(ValueError, match=r"cached weights are trainable \(embeddings.weight, layers.0"):
        trainable.enable_item_cache(collator)
    assert trainable.item_cache is None
    absolute = frozen_model("llama", "stacked", num_layers=4)
    del absolute.model.rotary_emb  # what a backbone with absolute position embeddings lacks
    with pytest.raises(ValueError, match="no rotary position embedding"):
        absolute.enable_item_cache(collator)


def test_a_stale_cache_is_never_used(tokenizer, catalog):
    collator = make_collator(tokenizer, catalog, "left")
    model = frozen_model("llama", "stacked", num_layers=4)
    batch = collator(HISTORIES)
    model.enable_item_cache(collator)
    with torch.no_grad():
        before = model(**batch).logits
        # an identical reload (the Trainer's load_best_model_at_end) keeps the cache valid
        model.load_state_dict(model.state_dict())
        torch.testing.assert_close(model(**batch).logits, before)
        model.model.layers[0].mlp.down_proj.weight.mul_(1.01)
        with pytest.raises(RuntimeError, match="cached item states are stale"):
            model(**batch)
    model.model.layers[0].requires_grad_(True)
    with pytest.raises(RuntimeError, match="became trainable"):
        model(**batch)
    model.disable_item_cache()
    assert torch.isfinite(model(**batch).logits).all()


def test_items_absent_from_the_cache_are_computed_live(tokenizer, catalog):
    model = frozen_model("llama", "stacked", num_layers=4)
    cache_collator = make_collator(tokenizer, catalog, "left", max_item_tokens=1)  # caches first words only
    batch = make_collator(tokenizer, catalog, "left")(HISTORIES)
    with torch.no_grad():
        masked = model(**batch).logits
        model.enable_item_cache(cache_collator)
        torch.testing.assert_close(model(**batch).logits, masked, atol=1e-4, rtol=1e-4)


def test_an_adapter_added_to_a_cached_layer_makes_the_cache_stale(tokenizer, catalog):
    from transformers_iam.integrations.peft import apply_lora

    collator = make_collator(tokenizer, catalog, "left")
    model = frozen_model("llama", "stacked", num_layers=4)
    model.enable_item_cache(collator)
    lora = apply_lora(model, rank=2)
    with pytest.raises(RuntimeError, match="gained or lost weights"):
        lora(**collator(HISTORIES))


@pytest.mark.parametrize("attn_implementation", ["eager", "flex_attention"])
def test_packed_intra_and_cache_on_the_other_backends(attn_implementation, tokenizer, catalog):
    collator = make_collator(tokenizer, catalog, "left", max_length=40)
    masked = frozen_model("llama", "hatllm", attn_implementation=attn_implementation)
    packed = same_weights_with(masked, intra_implementation="packed", attn_implementation=attn_implementation)
    packed.model.requires_grad_(False)
    batch = collator(HISTORIES)
    with torch.no_grad():
        expected = masked(**batch).logits
        torch.testing.assert_close(packed(**batch).logits, expected, atol=1e-4, rtol=1e-4)
        masked.enable_item_cache(collator)
        torch.testing.assert_close(masked(**batch).logits, expected, atol=1e-4, rtol=1e-4)
