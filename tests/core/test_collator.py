"""IAMDataCollator: rendering, truncation rules and errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from transformers_iam import IAMDataCollator

from ..testing_utils import catalog_tokenizer, collator_kwargs, synthetic_catalog


def make(tokenizer, catalog, **kwargs):
    return IAMDataCollator(tokenizer, catalog, **{"max_length": 64, **collator_kwargs(), **kwargs})


def spans(batch, row=0):
    """Token ids of each item span, in order, read back through the segment ids."""
    ids, segments = batch["input_ids"][row], batch["item_segment_ids"][row]
    real = batch["attention_mask"][row].bool()
    return [ids[(segments == segment) & real].tolist() for segment in range(1, int(segments.max()) + 1)]


def test_each_item_is_its_own_span_with_the_same_tokens_everywhere(tokenizer, catalog):
    collator = make(tokenizer, catalog)
    batch = collator([{"history": ["i1", "i2", "i5"], "target": "i7"}, {"history": ["i5", "i1"], "target": "i0"}])
    first, second = spans(batch, 0), spans(batch, 1)
    assert first[0] == second[1] == tokenizer("w1_0 w1_1", add_special_tokens=False)["input_ids"]
    assert first[2] == second[0]
    assert batch["labels"].tolist() == [7, 0]
    assert batch["history_item_indices"].tolist() == [[1, 2, 5], [5, 1, -1]]
    # context first (bos + prompt), query last, both segment 0
    row = batch["input_ids"][0]
    assert row[0] == tokenizer.bos_token_id
    assert tokenizer.decode(row[-2:]) == "next ?"
    assert batch["item_segment_ids"][0, -2:].tolist() == [0, 0]


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_padding_side(tokenizer, catalog, padding_side):
    batch = make(tokenizer, catalog, padding_side=padding_side)([{"history": ["i0"]}, {"history": ["i2", "i2", "i2"]}])
    mask = batch["attention_mask"][0]
    assert (mask[0] == 0) == (padding_side == "left") and (mask[-1] == 0) == (padding_side == "right")
    assert (batch["input_ids"][0][mask == 0] == tokenizer.pad_token_id).all()
    assert (batch["item_segment_ids"][0][mask == 0] == 0).all()
    assert "labels" not in batch


def test_long_history_drops_oldest_whole_items(tokenizer, catalog):
    history = [f"i{k}" for k in range(20)]
    collator = make(tokenizer, catalog, max_length=20, max_item_tokens=4)
    batch = collator([{"history": history, "target": "i0"}])
    assert batch["history_item_indices"][0].tolist() == list(range(20))  # all of it, for exclusion
    kept = [catalog.index_of(f"i{k}") for k in range(20 - len(spans(batch)), 20)]  # the newest items
    assert batch["input_ids"].shape[1] <= 20
    for index, span in zip(kept, spans(batch)):  # never part of an item
        assert span == collator.item_token_ids(index)
    # one more token of budget would not have fitted the next older item
    assert batch["input_ids"].shape[1] + len(collator.item_token_ids(19 - len(kept))) > 20


def test_max_history_items(tokenizer, catalog):
    batch = make(tokenizer, catalog, max_history_items=2)([{"history": ["i1", "i2", "i3"], "target": "i4"}])
    assert len(spans(batch)) == 2 and spans(batch)[0] == make(tokenizer, catalog).item_token_ids(2)
    assert batch["history_item_indices"].tolist() == [[1, 2, 3]]  # exclusion still covers every item


def test_item_text_is_capped(tokenizer, catalog):
    collator = make(tokenizer, catalog, max_item_tokens=2)
    assert len(collator.item_token_ids(catalog.index_of("i2"))) == 2  # "w2_0 w2_1 w2_2" has 3 words
    batch = collator([{"history": ["i2", "i2"], "target": "i4"}])
    assert [len(span) for span in spans(batch)] == [2, 2]


def test_unknown_history_item_names_item_and_example(tokenizer, catalog):
    collator = make(tokenizer, catalog)
    with pytest.raises(ValueError, match=r"example 1 \(user u9\): history item 'nope' is not in the catalog"):
        collator([{"history": ["i1"], "target": "i2"}, {"user_id": "u9", "history": ["i1", "nope"], "target": "i2"}])


def test_unknown_target(tokenizer, catalog):
    with pytest.raises(ValueError, match="example 0: target item 'gone' is not in the catalog"):
        make(tokenizer, catalog)([{"history": ["i1"], "target": "gone"}])


@pytest.mark.parametrize("history", [[], None])
def test_empty_history(tokenizer, catalog, history):
    with pytest.raises(ValueError, match=r"example 0 \(user 7\): the history is empty"):
        make(tokenizer, catalog)([{"user_id": 7, "history": history, "target": "i1"}])


def test_max_length_too_small_for_one_item(tokenizer, catalog):
    with pytest.raises(ValueError, match="max_length=8 leaves"):
        make(tokenizer, catalog, max_length=8, max_item_tokens=4)


def test_mixed_targets_in_a_batch(tokenizer, catalog):
    with pytest.raises(ValueError, match="example 1 has no target"):
        make(tokenizer, catalog)([{"history": ["i1"], "target": "i2"}, {"history": ["i1"]}])


def test_int_item_ids_match_string_ids(tokenizer):
    from transformers_iam import ItemCatalog

    catalog = ItemCatalog([1, 2, 3], ["w1_0", "w2_0", "w3_0"])
    batch = IAMDataCollator(tokenizer, catalog, max_length=40, **collator_kwargs())(
        [{"history": [1, "2"], "target": 3}]
    )
    assert batch["labels"].tolist() == [2]
    assert isinstance(batch["input_ids"], torch.Tensor)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_length=0), "max_length must be an int >= 1, got 0"),
        (dict(max_item_tokens=2.5), "max_item_tokens must be an int >= 1, got 2.5"),
        (dict(max_history_items=0), "max_history_items must be None or an int >= 1, got 0"),
        (dict(item_template="{title}"), r"item_template must be a format string with only \{text\}"),
        (dict(item_template="movie"), r"item_template must contain \{text\}"),
    ],
)
def test_bad_settings_are_named(tokenizer, catalog, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(tokenizer, catalog, **kwargs)


def test_history_given_as_a_string_is_refused(tokenizer, catalog):
    # "i1" would otherwise be read as the items "i" and "1"
    with pytest.raises(ValueError, match=r"example 0 \(user u\): history must be a list of item ids, got 'i1'"):
        make(tokenizer, catalog)([{"user_id": "u", "history": "i1", "target": "i2"}])
    with pytest.raises(ValueError, match="example 0 must be a dict"):
        make(tokenizer, catalog)([["i1"]])


def test_an_item_that_tokenizes_to_nothing_is_named(tokenizer):
    from tokenizers import normalizers

    from transformers_iam import ItemCatalog

    # real tokenizers drop characters in their normalizer (control characters, accents): here "~"
    tokenizer.backend_tokenizer.normalizer = normalizers.Replace("~", "")
    catalog = ItemCatalog(["a", "b"], ["w1_0", "~~"])
    collator = IAMDataCollator(tokenizer, catalog, max_length=40, **collator_kwargs())
    with pytest.raises(ValueError, match=r"item 'b' \(catalog index 1\) tokenizes to no tokens"):
        collator([{"history": ["a", "b"], "target": "a"}])


# -- property-based: segments, truncation and exclusion on random histories ---------------------

PROPERTY_CATALOG = synthetic_catalog(12)
PROPERTY_TOKENIZER = catalog_tokenizer(PROPERTY_CATALOG)


@settings(max_examples=80, deadline=None)
@given(
    history=st.lists(st.integers(0, 11), min_size=1, max_size=25),
    max_length=st.integers(12, 48),
    max_item_tokens=st.integers(1, 3),
    max_history_items=st.none() | st.integers(1, 10),
    padding_side=st.sampled_from(["left", "right"]),
)
def test_rendering_properties(history, max_length, max_item_tokens, max_history_items, padding_side):
    collator = IAMDataCollator(
        PROPERTY_TOKENIZER,
        PROPERTY_CATALOG,
        max_length=max_length,
        max_item_tokens=max_item_tokens,
        max_history_items=max_history_items,
        padding_side=padding_side,
        **collator_kwargs(),
    )
    ids = [PROPERTY_CATALOG.item_ids[index] for index in history]
    batch = collator([{"history": ids}])
    kept = spans(batch)
    # exclusion covers every history item, in order, whatever was rendered
    assert batch["history_item_indices"][0].tolist() == history
    assert batch["attention_mask"][0].sum() <= max_length
    # each segment is one whole item, and the rendered items are the newest ones, in order
    newest = history[len(history) - len(kept) :]
    assert kept == [collator.item_token_ids(index) for index in newest]
    assert len(kept) >= 1
    # truncation stopped only because the next older item would not fit (or the item cap was reached)
    if len(kept) < len(history) and (max_history_items is None or len(kept) < max_history_items):
        older = collator.item_token_ids(history[len(history) - len(kept) - 1])
        assert int(batch["attention_mask"][0].sum()) + len(older) > max_length
    if max_history_items is not None:
        assert len(kept) <= max_history_items
