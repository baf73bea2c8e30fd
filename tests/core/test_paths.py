"""One model, four ways to run it: every fast path (packed intra layers, the item-state cache, FlexAttention) gives
the masked path's outputs, has one behaviour for every input, and stays right when several threads call it.

The reference is always the masked path (every layer over the whole prompt under item-aware masks); no fast path is
tested against itself. The common checks of transformers' model tests (save/load, batching and padding, hidden
states, attention backends, gradient checkpointing, torch.compile) run over every backbone and path.
"""

from __future__ import annotations

import random
import threading

import pytest
import torch
from transformers import MistralConfig

from transformers_iam import IAMConfig, IAMDataCollator, IAMForCausalRecommendation

from ..testing_utils import BACKBONES, PATHS, TINY, collator_kwargs, path_model, same_weights_with, tiny_model

HISTORIES = [
    {"history": ["i3", "i1"], "target": "i4"},
    {"history": [f"i{k}" for k in range(12)], "target": "i2"},
    {"history": ["i7", "i7", "i9", "i5"], "target": "i3"},  # an item twice: one span each, same states
]


def make_collator(tokenizer, catalog, padding_side: str = "left", max_length: int = 48, **kwargs) -> IAMDataCollator:
    return IAMDataCollator(
        tokenizer, catalog, max_length=max_length, padding_side=padding_side, **collator_kwargs(), **kwargs
    )


def outputs(model, batch, **kwargs):
    with torch.no_grad():
        return model(**batch, **kwargs)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("path", PATHS[1:])
@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("layout", ["stacked", "hatllm", "alternating"])
def test_every_path_gives_the_masked_outputs(backbone, path, padding_side, layout, tokenizer, catalog):
    collator = make_collator(tokenizer, catalog, padding_side, max_length=40)  # cuts the 12-item history
    masked = tiny_model(backbone, num_layers=6, iam_layout=layout)
    model = path_model(masked, path, collator)
    batch = collator(HISTORIES)
    real = batch["attention_mask"].bool()
    assert not real.all()  # padding present
    expected, got = outputs(masked, batch, output_hidden_states=True), outputs(model, batch, output_hidden_states=True)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-4, rtol=1e-4)
    # embeddings and one state per layer, on every path
    assert len(got.hidden_states) == len(expected.hidden_states) == masked.config.num_backbone_layers + 1
    for layer, (a, b) in enumerate(zip(got.hidden_states, expected.hidden_states)):
        torch.testing.assert_close(a[real], b[real], atol=1e-4, rtol=1e-4, msg=f"{path}: hidden state {layer}")


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("path", PATHS)
def test_batching_and_padding_do_not_change_a_users_scores(backbone, path, tokenizer, catalog):
    collator = make_collator(tokenizer, catalog)
    model = path_model(tiny_model(backbone, num_layers=4), path, collator)
    short, long = HISTORIES[0], HISTORIES[1]
    for padding_side in ("left", "right"):
        collator.padding_side = padding_side
        alone = outputs(model, collator([short])).logits
        batched = outputs(model, collator([long, short])).logits
        torch.testing.assert_close(batched[1:], alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("path", PATHS)
def test_save_and_reload_gives_the_same_scores(backbone, path, tmp_path, tokenizer, catalog):
    collator = make_collator(tokenizer, catalog)
    model = path_model(
        tiny_model(backbone, num_layers=4, num_item_tokens=2, use_item_id_embeddings=True), path, collator
    )
    with torch.no_grad():
        model.item_id_embeddings.weight.normal_()  # trained-looking identities: they must be saved too
    if model.item_cache is not None:  # the cache holds states, not weights: rebuild it after the change above
        model.enable_item_cache(collator)
    model.set_catalog(catalog)
    batch = collator(HISTORIES)
    model.save_pretrained(tmp_path)
    # the attention implementation is not saved (transformers' choice): a reload asks for it again, and stays item-aware
    reloaded = IAMForCausalRecommendation.from_pretrained(
        tmp_path, attn_implementation="flex_attention" if path == "flex" else None
    ).eval()
    assert reloaded.config._attn_implementation == model.config._attn_implementation
    if path == "cached":
        reloaded.model.requires_grad_(False)
        reloaded.enable_item_cache(collator)
    torch.testing.assert_close(outputs(reloaded, batch).logits, outputs(model, batch).logits)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("path", ["masked", "packed"])
def test_gradient_checkpointing_gives_the_same_gradients(backbone, path, tokenizer, catalog):
    collator = make_collator(tokenizer, catalog, "right")
    model = path_model(tiny_model(backbone, num_layers=4), path, collator).train()
    checkpointed = same_weights_with(model).train()
    checkpointed.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    batch = collator(HISTORIES)
    model(**batch).loss.backward()
    checkpointed(**batch).loss.backward()
    for (name, a), (_, b) in zip(model.named_parameters(), checkpointed.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["masked", "packed"])
def test_torch_compile_gives_the_same_scores(path, tokenizer, catalog):
    collator = make_collator(tokenizer, catalog)
    model = path_model(tiny_model(num_layers=4), path, collator)
    batch = collator(HISTORIES)
    expected = outputs(model, batch).logits
    model.model = torch.compile(model.model)  # the decoder layers and attention functions, through dynamo
    torch.testing.assert_close(outputs(model, batch).logits, expected, atol=1e-4, rtol=1e-4)


# -- item-level inter half ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("path", PATHS[1:])
@pytest.mark.parametrize("num_item_tokens", [1, 2])
def test_item_level_paths_agree(backbone, path, num_item_tokens, tokenizer, catalog):
    collator = make_collator(tokenizer, catalog, "left")
    masked = tiny_model(backbone, num_layers=4, num_item_tokens=num_item_tokens, iam_layout="hatllm")
    model = path_model(masked, path, collator)
    batch = collator(HISTORIES)
    expected, got = outputs(masked, batch, output_hidden_states=True), outputs(model, batch, output_hidden_states=True)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-4, rtol=1e-4)
    assert len(got.hidden_states) == 5
    # and it is another model than the token-level one (the upper layers see fewer states)
    token_level = same_weights_with(masked, num_item_tokens=None)
    assert not torch.allclose(outputs(token_level, batch).logits, expected.logits, atol=1e-4)


@pytest.mark.parametrize("path", PATHS)
def test_keeping_every_token_of_every_item_is_the_token_level_model(path, tokenizer, catalog):
    collator = make_collator(tokenizer, catalog, "right", max_item_tokens=3)
    token_level = tiny_model(num_layers=4)
    every_token = path_model(same_weights_with(token_level, num_item_tokens=3), path, collator)  # items have <= 3
    batch = collator(HISTORIES)
    torch.testing.assert_close(
        outputs(every_token, batch).logits, outputs(token_level, batch).logits, atol=1e-5, rtol=0
    )


def test_item_level_needs_a_leading_intra_run():
    with pytest.raises(Exception, match="needs a leading run of intra layers"):
        tiny_model(num_layers=4, num_item_tokens=1, iam_layer_types=["full", "intra", "inter", "inter"])
    model = tiny_model(num_layers=4, num_item_tokens=1)
    with pytest.raises(ValueError, match="needs a leading run of intra layers"):
        model.set_iam_layer_types(["inter"] * 4)
    assert model.config.resolved_layer_types == ["intra", "intra", "inter", "inter"]  # unchanged


# -- one behaviour for every input -------------------------------------------------------------------------------
def _bad_inputs(batch: dict, case: str) -> dict:
    batch = {key: value.clone() for key, value in batch.items()}
    if case == "noncontiguous segments":
        row = batch["item_segment_ids"][1]
        row[(row == 3).nonzero()[0, 0]] = 1  # item 1 comes back after item 2
    elif case == "all-padding row":
        batch["attention_mask"][1] = 0
    elif case == "out-of-vocabulary ids":
        batch["input_ids"][0, -1] = 10_000
    return batch


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "case, error",
    [
        ("good", None),
        ("noncontiguous segments", "is not contiguous"),
        ("all-padding row", "are all padding"),
        ("out-of-vocabulary ids", r"input_ids must be token ids in \[0, 160\)"),
    ],
)
def test_the_same_input_has_the_same_outcome_on_every_path(path, case, error, tokenizer, catalog):
    collator = make_collator(tokenizer, catalog)
    masked = tiny_model(num_layers=4)
    model = path_model(masked, path, collator)
    batch = _bad_inputs(collator(HISTORIES), case)
    if error is None:
        torch.testing.assert_close(outputs(model, batch).logits, outputs(masked, batch).logits, atol=1e-4, rtol=1e-4)
    else:
        with pytest.raises(ValueError, match=error):
            outputs(model, batch)


@pytest.mark.parametrize("path", PATHS[1:])
def test_sliding_window_prompts_longer_than_the_window_are_exact(path, tokenizer, catalog):
    # a window of 4 tokens: the 12-item prompt is many windows long, in the intra and in the inter layers
    config = IAMConfig(text_config=MistralConfig(num_hidden_layers=4, **{**TINY, "sliding_window": 4}), num_items=20)
    torch.manual_seed(0)
    masked = IAMForCausalRecommendation(config).eval()
    collator = make_collator(tokenizer, catalog)
    model = path_model(masked, path, collator)
    batch = collator(HISTORIES)
    assert batch["attention_mask"].sum(-1).max() > 4 * config.text_config.sliding_window
    torch.testing.assert_close(outputs(model, batch).logits, outputs(masked, batch).logits, atol=1e-4, rtol=1e-4)
    # the window matters: without it the scores differ
    wide = same_weights_with(masked)
    wide.config.text_config.sliding_window = None
    wide.model.config.sliding_window = None
    assert not torch.allclose(outputs(wide, batch).logits, outputs(masked, batch).logits, atol=1e-4)


# -- concurrency ---------------------------------------------------------------------------------------------------
def test_concurrent_forwards_on_one_model_match_their_sequential_results(tokenizer, catalog):
    collator = make_collator(tokenizer, catalog)
    model = tiny_model(num_layers=6, iam_layout="hatllm")
    model.model.requires_grad_(False)
    model.enable_item_cache(collator)
    batches = [collator(HISTORIES[:2]), collator(HISTORIES[1:]), collator(HISTORIES[::2])]

    def embeds(batch):
        arguments = {key: value for key, value in batch.items() if key != "input_ids"}
        return dict(arguments, inputs_embeds=model.get_input_embeddings()(batch["input_ids"]))

    calls = []
    for index, batch in enumerate(batches):
        calls += [
            (f"cached {index}", lambda b=batch: model(**b).logits),
            (f"packed {index}", lambda b=batch: model(**b, path="packed").logits),
            (f"masked {index}", lambda b=batch: model(**b, path="masked").logits),
            (f"inputs_embeds {index}", lambda b=batch: model(**embeds(b)).logits),
        ]
    with torch.no_grad():
        expected = {name: call() for name, call in calls}
    results, errors = {}, []
    order = [call for call in calls for _ in range(5)]
    random.Random(0).shuffle(order)

    def worker(share):
        try:
            with torch.no_grad():
                for name, call in share:
                    results.setdefault(name, []).append(call())
        except Exception as error:  # noqa: BLE001 - reported below with its thread's call
            errors.append(repr(error))

    threads = [threading.Thread(target=worker, args=(order[start::4],)) for start in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sum(len(values) for values in results.values()) == len(order)
    for name, values in results.items():
        for value in values:
            torch.testing.assert_close(value, expected[name], atol=1e-5, rtol=1e-5, msg=name)
