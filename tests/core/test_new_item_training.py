"""Training for items the model has not seen: rows read from text plus a residual (``item_rows_from_text``), whole
items playing new ones at each step (``new_item_dropout``), and a new item scored as those were."""

from __future__ import annotations

import pytest
import torch

from transformers_iam import IAMDataCollator, ItemCatalog

from ..testing_utils import catalog_tokenizer, collator_kwargs, tiny_model

TEXTS = [f"w{k}_0 w{k % 3}_1" for k in range(20)]
HISTORIES = [
    {"history": ["i1", "i4", "i9"], "target": "i2"},
    {"history": ["i2", "i5"], "target": "i7"},
    {"history": ["i3", "i6", "i8", "i0"], "target": "i11"},
]


def text_rows_model(**overrides):
    catalog = ItemCatalog([f"i{k}" for k in range(20)], TEXTS)
    collator = IAMDataCollator(catalog_tokenizer(catalog), catalog, max_length=64, **collator_kwargs())
    values = dict(num_item_tokens=1, use_item_id_embeddings=True, item_rows_from_text=True, new_item_dropout=0.5)
    model = tiny_model(num_layers=4, **{**values, **overrides})
    model.set_catalog(catalog)
    model.init_item_text_features(collator)
    with torch.no_grad():  # a "trained" model: residuals, identities and the text map all far from zero
        model.adapter.item_embeddings.weight.normal_()
        model.adapter.item_embeddings.bias.normal_()
        model.item_id_embeddings.weight.normal_()
        model.adapter.text_to_rows.weight.normal_(std=0.2)
    return model, collator


def model_inputs(batch: dict) -> dict:
    return {key: value for key, value in batch.items() if key not in ("labels", "history_item_indices")}


def test_an_item_playing_a_new_one_is_scored_as_an_added_item_with_its_text():
    model, collator = text_rows_model()
    model.add_items(["n3"], [TEXTS[3]], collator)  # the text of i3, added after "training"
    keep = torch.ones(21, dtype=torch.bool)
    keep[3] = False
    weight, bias = model.adapter.item_rows(keep=keep)
    torch.testing.assert_close(weight[3], weight[20])
    torch.testing.assert_close(bias[3], bias[20])
    full_weight, _ = model.adapter.item_rows()
    assert not torch.allclose(full_weight[3], full_weight[20])  # with its residual, i3 is scored otherwise
    # and read alike: i3 without its id vector is the new item in a history
    batch = collator([{"history": ["i1", "i3"]}, {"history": ["i1", "n3"]}])
    states = model.backbone_forward(**model_inputs(batch), kept_items=keep).last_hidden_state
    torch.testing.assert_close(states[0], states[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_sampled_negatives", [None, 8], ids=["full-softmax", "sampled"])
def test_items_playing_new_ones_get_no_gradient_on_what_a_new_item_lacks(num_sampled_negatives):
    model, collator = text_rows_model(num_sampled_negatives=num_sampled_negatives)
    model.train()
    batch = collator(HISTORIES)
    torch.manual_seed(5)
    keep = model.simulated_new_items()
    assert keep.shape == (20,) and 0 < int(keep.sum()) < 20
    torch.manual_seed(5)  # the forward draws the same items
    model(**batch).loss.backward()
    row_gradient = model.adapter.item_embeddings.weight.grad.abs().sum(-1)
    id_gradient = model.item_id_embeddings.weight.grad.abs().sum(-1)
    assert (row_gradient[~keep] == 0).all() and (id_gradient[~keep] == 0).all()
    scored = row_gradient > 0
    assert scored[keep].any() and (id_gradient[keep] > 0).any()
    assert model.adapter.text_to_rows.weight.grad.abs().sum() > 0  # the text map learns from every item


def test_evaluation_keeps_every_residual():
    model, collator = text_rows_model()
    batch = collator(HISTORIES)
    assert model.eval().simulated_new_items() is None
    with torch.no_grad():
        first, second = model(**batch).logits, model(**batch).logits
        projected = model.user_states(**model_inputs(batch))
        expected = torch.nn.functional.linear(projected, *model.adapter.item_rows())
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(first, expected)


def test_a_fresh_text_map_leaves_the_rows_the_items_own():
    model = tiny_model(num_layers=4, item_rows_from_text=True)
    weight, bias = model.adapter.item_rows()
    torch.testing.assert_close(weight, model.adapter.item_embeddings.weight)
    torch.testing.assert_close(bias, model.adapter.item_embeddings.bias)


def test_text_features_are_for_rows_read_from_text_and_read_before_items_are_added():
    with pytest.raises(ValueError, match="config.item_rows_from_text is False"):
        tiny_model(num_layers=4).init_item_text_features([[1]] * 20)
    model, collator = text_rows_model()
    model.adapter.item_text_features.zero_()  # as a model whose features were never read
    with pytest.raises(ValueError, match=r"never read: call model.init_item_text_features\(collator\)"):
        model.add_items(["n1"], ["w1_0"], collator)
    assert model.config.num_items == 20 and len(collator.catalog) == 20
