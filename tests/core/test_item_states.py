"""Item states computed once: the item-state cache's lifecycle (what it holds, when it is refused, rebuilt, dropped or
stale) and packed intra attention's gradients. Path-against-path equality is in test_paths.py."""

from __future__ import annotations

import copy

import pytest
import torch

from transformers_iam import IAMDataCollator, IAMForCausalRecommendation

from ..testing_utils import collator_kwargs, same_weights_with, tiny_model

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


def test_the_cache_is_really_used(tokenizer, catalog):
    collator = make_collator(tokenizer, catalog, "left", max_length=24, max_item_tokens=4)
    model = frozen_model("llama", "stacked")
    batch = collator(HISTORIES)
    with torch.no_grad():
        masked = model(**batch).logits
        cache = model.enable_item_cache(collator)
        torch.testing.assert_close(model(**batch).logits, masked, atol=1e-4, rtol=1e-4)
        assert cache.num_layers == model.num_leading_intra_layers == 3 and cache.num_items == len(catalog)
        cache.states.add_(1.0)  # corrupting the states changes the logits
        assert not torch.allclose(model(**batch).logits, masked, atol=1e-3)


def scores_only(collator, histories: list[dict]) -> dict:  # the collator's labels are for supervision="last"
    return {key: value for key, value in collator(histories).items() if key != "labels"}


def count_first_layer_calls(model) -> list:
    calls = []
    model.model.layers[0].register_forward_hook(lambda module, args, output: calls.append(1))
    return calls


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("supervision", ["last", "every_item"])
def test_the_prompts_context_run_is_remembered_where_every_user_shares_it(
    supervision, padding_side, tokenizer, catalog
):
    # every-item supervision reads item ends: the context is the prompt before the history, the same for every user,
    # and is remembered; with "last" a query follows the history, at a position that moves with it: it runs live
    collator = make_collator(tokenizer, catalog, padding_side)
    model = frozen_model("llama", "stacked", num_layers=4, supervision=supervision)
    users = [scores_only(collator, [history]) for history in HISTORIES]
    with torch.no_grad():
        expected = [model(**batch, path="masked").logits for batch in users]
        model.enable_item_cache(collator)
        torch.testing.assert_close(model(**users[0]).logits, expected[0], atol=1e-4, rtol=1e-4)
        calls = count_first_layer_calls(model)
        for batch, logits in zip(users[1:], expected[1:]):  # users not seen before
            torch.testing.assert_close(model(**batch).logits, logits, atol=1e-4, rtol=1e-4)
        batched = model(**scores_only(collator, HISTORIES)).logits
        torch.testing.assert_close(batched, torch.cat(expected), atol=1e-4, rtol=1e-4)
    assert bool(calls) == (supervision == "last")  # shared: no user runs the cached layers again
    calls.clear()
    with torch.no_grad():
        model(**users[0])
    assert bool(calls) == (supervision == "last")  # not kept per user, not even for a user seen before
    calls.clear()
    model(**users[0])
    assert calls  # with autograd (training) the context runs live
    calls.clear()
    model.item_cache.max_contexts = 0  # remembering none: the context runs live, the outputs unchanged
    with torch.no_grad():
        torch.testing.assert_close(model(**users[1]).logits, expected[1], atol=1e-4, rtol=1e-4)
    assert calls


def test_a_context_run_is_remembered_by_its_positions_and_only_the_latest_are_kept(tokenizer, catalog):
    collator = make_collator(tokenizer, catalog, "left")
    model = frozen_model("llama", "stacked", num_layers=4, supervision="every_item")
    batch = scores_only(collator, HISTORIES[:1])
    positions = torch.arange(batch["input_ids"].shape[1])[None]
    first_item = int((batch["item_segment_ids"][0] > 0).nonzero()[0, 0])
    # the prompt's tokens spread apart (relative distances change), the items after them contiguous as collated
    spread = torch.where(positions < first_item, 2 * positions, positions + first_item - 1)
    with torch.no_grad():
        expected = model(**batch, path="masked").logits
        expected_spread = model(**batch, position_ids=spread, path="masked").logits
        assert not torch.allclose(expected, expected_spread, atol=1e-4)
        cache = model.enable_item_cache(collator)
        with pytest.raises(ValueError, match="max_contexts"):
            cache.max_contexts = -1
        cache.max_contexts = 1
        torch.testing.assert_close(model(**batch).logits, expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(model(**batch, position_ids=spread).logits, expected_spread, atol=1e-4, rtol=1e-4)
        calls = count_first_layer_calls(model)
        torch.testing.assert_close(model(**batch).logits, expected, atol=1e-4, rtol=1e-4)
    assert calls  # one context kept: the spread one replaced the first, which ran again


@pytest.mark.parametrize("case", ["the model in training", "one attention module in training", "bf16 autocast"])
def test_a_context_run_unlike_eval_in_fp32_is_never_remembered(case, tokenizer, catalog):
    # a train-mode forward without autograd still drops attention, autocast rounds: such context states must not
    # serve later calls
    collator = make_collator(tokenizer, catalog, "left")
    reference = frozen_model("llama", "stacked", num_layers=4, supervision="every_item")
    with_dropout = copy.deepcopy(reference.config)
    with_dropout.text_config.attention_dropout = 0.5
    model = IAMForCausalRecommendation(with_dropout)
    model.load_state_dict(reference.state_dict())
    model.model.requires_grad_(False)
    model.eval().enable_item_cache(collator)
    batch = scores_only(collator, HISTORIES[:1])
    with torch.no_grad():
        if case == "the model in training":
            model.train()(**batch)
        elif case == "one attention module in training":  # Monte-Carlo dropout
            model.model.layers[0].self_attn.train()
            model(**batch)
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                model(**batch)
        expected = reference(**batch).logits
        torch.testing.assert_close(model.eval()(**batch).logits, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("num_item_tokens", [None, 1])
def test_a_cache_built_in_training_holds_the_dropout_free_states(num_item_tokens, tokenizer, catalog):
    # attention dropout in training must neither leak into the stored states nor fail the exactness check
    collator = make_collator(tokenizer, catalog, "left")
    reference = frozen_model("llama", "stacked", num_item_tokens=num_item_tokens)
    with_dropout = copy.deepcopy(reference.config)
    with_dropout.text_config.attention_dropout = 0.5
    model = IAMForCausalRecommendation(with_dropout)
    model.load_state_dict(reference.state_dict())
    model.model.requires_grad_(False)
    cache = model.train().enable_item_cache(collator)
    assert model.training
    expected = reference.eval().enable_item_cache(collator)
    torch.testing.assert_close(cache.states, expected.states)
    batch = collator(HISTORIES)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(**batch).logits, reference(**batch).logits)


def test_an_item_level_cache_stores_only_what_the_layers_above_read(tokenizer, catalog):
    collator = make_collator(tokenizer, catalog, "left")
    every_token = frozen_model("llama", "stacked").enable_item_cache(collator)
    one_per_item = frozen_model("llama", "stacked", num_item_tokens=1).enable_item_cache(collator)
    assert one_per_item.states.shape[0] == len(catalog) < every_token.states.shape[0]
    assert one_per_item.nbytes * every_token.states.shape[0] == every_token.nbytes * len(catalog)


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
        tiny_model(num_layers=2, iam_layer_types=["inter", "intra"]).enable_item_cache(collator)
    trainable = tiny_model(num_layers=4)
    with pytest.raises(ValueError, match=r"cached weights are trainable \(embeddings.weight, layers.0"):
        trainable.enable_item_cache(collator)
    assert trainable.item_cache is None
    absolute = frozen_model("llama", "stacked", num_layers=4)
    del absolute.model.rotary_emb  # what a backbone with absolute position embeddings lacks
    with pytest.raises(ValueError, match="no rotary position embedding"):
        absolute.enable_item_cache(collator)


@pytest.mark.parametrize(
    "change, message",
    [
        ("optimizer-like update of a cached layer", "cached item states are stale"),
        ("two rows of the token embeddings swapped", "cached item states are stale"),
        ("rotary frequencies changed", "cached item states are stale"),
        ("rotary frequencies replaced (dynamic RoPE)", "rotary frequencies were replaced"),
        ("rotary attention scaling changed", "attention_scaling changed"),
        ("a cached layer made trainable", "became trainable"),
        ("num_item_tokens changed", "built for another model: the states per item"),
    ],
)
def test_a_stale_cache_is_never_used(change, message, tokenizer, catalog):
    collator = make_collator(tokenizer, catalog, "left")
    model = frozen_model("llama", "stacked", num_layers=4)
    batch = collator(HISTORIES)
    model.enable_item_cache(collator)
    with torch.no_grad():
        before = model(**batch).logits
        # an identical reload (the Trainer's load_best_model_at_end) keeps the cache valid
        model.load_state_dict(model.state_dict())
        torch.testing.assert_close(model(**batch).logits, before)
        if change.startswith("optimizer"):
            model.model.layers[0].mlp.down_proj.weight.mul_(1.01)
        elif change.startswith("two rows"):
            weight = model.get_input_embeddings().weight
            weight[[5, 6]] = weight[[6, 5]]  # same sum, same sum of squares: only a digest sees it
        elif change.startswith("rotary frequencies changed"):
            model.model.rotary_emb.inv_freq.mul_(1.5)
        elif change.startswith("rotary frequencies replaced"):  # as dynamic RoPE does past its original length
            model.model.rotary_emb.register_buffer("inv_freq", model.model.rotary_emb.inv_freq * 1.5, persistent=False)
        elif change.startswith("rotary attention"):
            model.model.rotary_emb.attention_scaling = 3.0
        elif change.startswith("num_item_tokens"):
            model.config.num_item_tokens = 1
    if change.endswith("trainable"):
        model.model.layers[0].requires_grad_(True)
    with pytest.raises(RuntimeError, match=message):
        model(**batch)
    model.disable_item_cache()
    assert torch.isfinite(model(**batch).logits).all()


def test_writes_that_bypass_version_counters_are_caught_by_verify(tokenizer, catalog):
    collator = make_collator(tokenizer, catalog, "left")
    model = frozen_model("llama", "stacked", num_layers=4)
    cache = model.enable_item_cache(collator)
    cache.verify()
    model.model.layers[1].self_attn.q_proj.weight.data[0, 0] += 1.0  # .data: PyTorch does not count it
    with pytest.raises(RuntimeError, match="stale"):
        cache.verify()


def _log_of(action) -> str:
    from transformers.utils import logging as hf_logging

    handler_output = []

    class Collect(__import__("logging").Handler):
        def emit(self, record):
            handler_output.append(record.getMessage())

    logger = hf_logging.get_logger("transformers_iam")
    handler = Collect()
    logger.addHandler(handler)
    try:
        action()
    finally:
        logger.removeHandler(handler)
    return "\n".join(handler_output)


def test_changing_the_layer_kinds_rebuilds_or_drops_the_cache(tokenizer, catalog):
    collator = make_collator(tokenizer, catalog, "left")
    model = frozen_model("llama", "stacked")  # 3 intra, 3 inter
    batch = collator(HISTORIES)
    model.enable_item_cache(collator)
    hatllm = ["intra", "intra", "full", "full", "inter", "inter"]
    log = _log_of(lambda: model.set_iam_layer_types(hatllm))
    assert "item-state cache rebuilt (the layer kinds changed)" in log
    assert model.item_cache.num_layers == 2
    reference = same_weights_with(model, iam_layer_types=hatllm)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, reference(**batch).logits, atol=1e-4, rtol=1e-4)
    log = _log_of(lambda: model.set_iam_layer_types(["inter"] * 6))
    assert "item-state cache dropped (the layer kinds changed): no leading intra run" in log
    assert model.item_cache is None


def test_changing_the_attention_implementation_rebuilds_the_cache(tokenizer, catalog):
    collator = make_collator(tokenizer, catalog, "left")
    model = frozen_model("llama", "stacked")
    model.enable_item_cache(collator)
    log = _log_of(lambda: model.set_attn_implementation("eager"))
    assert "item-state cache rebuilt (the attention implementation changed)" in log
    assert model.item_cache.record.attn_implementation == "iam_eager"
    batch = collator(HISTORIES)
    with torch.no_grad():
        expected = model(**batch, path="masked").logits
        torch.testing.assert_close(model(**batch).logits, expected, atol=1e-4, rtol=1e-4)


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


def test_packed_intra_and_cache_with_eager_attention(tokenizer, catalog):
    collator = make_collator(tokenizer, catalog, "left", max_length=40)
    masked = frozen_model("llama", "hatllm", attn_implementation="eager")
    packed = same_weights_with(masked, intra_implementation="packed", attn_implementation="eager")
    batch = collator(HISTORIES)
    with torch.no_grad():
        expected = masked(**batch).logits
        torch.testing.assert_close(packed(**batch).logits, expected, atol=1e-4, rtol=1e-4)
        masked.enable_item_cache(collator)
        torch.testing.assert_close(masked(**batch).logits, expected, atol=1e-4, rtol=1e-4)
