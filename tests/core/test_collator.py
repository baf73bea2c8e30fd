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


# -- settings: one check for the constructor and for iam_collator.json, with stated bounds ---------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_length=40000), r"max_length must be at most 32768 \(collator.MAX_LENGTH\), got 40000"),
        (dict(max_item_tokens=65), r"max_item_tokens must be at most max_length \(64\), got 65"),
        (dict(max_history_items=10**6), r"max_history_items must be at most 32768 \(collator.MAX_HISTORY_ITEMS\)"),
        (dict(prompt=None), "prompt must be a string, got NoneType None"),
        (dict(query="x " * 70000), r"query must be at most 131072 characters \(collator.MAX_PROMPT_CHARS\), got"),
        (dict(item_template="{text:>5000}"), r"item_template must use \{text\} as it is, without a conversion"),
        (dict(item_template="{text.upper}"), r"item_template must be a format string with only \{text\}"),
        (dict(item_template="{text}" + "x" * 1024), r"item_template must be at most 1024 characters"),
        (dict(every_item_targets="false"), "every_item_targets must be True or False, got 'false'"),
    ],
)
def test_stated_bounds_are_enforced_by_the_constructor(tokenizer, catalog, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(tokenizer, catalog, **kwargs)


def test_max_length_is_bounded_by_the_tokenizers_stated_model_max_length(catalog):
    tokenizer = catalog_tokenizer(catalog)
    tokenizer.model_max_length = 48
    with pytest.raises(ValueError, match=r"max_length must be at most 48 \(the tokenizer's model_max_length\)"):
        make(tokenizer, catalog, max_length=64)
    assert make(tokenizer, catalog, max_length=48).max_length == 48


def saved(tmp_path, tokenizer, catalog, **changes):
    """A folder with a valid collator saved, then ``iam_collator.json`` changed."""
    import json

    make(tokenizer, catalog).save_pretrained(tmp_path)
    path = tmp_path / "iam_collator.json"
    settings = json.loads(path.read_text(encoding="utf-8"))
    settings.update(changes)
    path.write_text(json.dumps(settings), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(max_length=10**9), r"max_length must be at most 32768 \(collator.MAX_LENGTH\), got 1000000000"),
        (dict(max_length=64.0), "max_length must be an int >= 1, got 64.0"),
        (dict(max_item_tokens=10**9), r"max_item_tokens must be at most max_length \(64\), got 1000000000"),
        (dict(max_history_items=10**9), r"max_history_items must be at most 32768"),
        (dict(max_history_items=0), "max_history_items must be None or an int >= 1, got 0"),
        (dict(prompt="user " * 300000), r"prompt must be at most 131072 characters .*, got 1500000"),
        (dict(query=["next"]), r"query must be a string, got list \['next'\]"),
        (dict(item_template="{text:>999999999}"), r"item_template must use \{text\} as it is"),
        (dict(item_template="{text}" * 200), r"item_template must be at most 1024 characters"),
        (dict(item_template="movie"), r"item_template must contain \{text\}"),
        (dict(padding_side="middle"), "padding_side must be 'left' or 'right', got 'middle'"),
        (dict(every_item_targets="false"), "every_item_targets must be True or False, got 'false'"),
        (dict(max_length=9, max_item_tokens=4), r"max_length=9 leaves 3 tokens for items"),
    ],
)
def test_a_hostile_settings_file_is_refused_naming_file_and_field(tmp_path, tokenizer, catalog, changes, message):
    path = saved(tmp_path, tokenizer, catalog, **changes)
    with pytest.raises(ValueError, match=rf"{path}: {message}"):
        IAMDataCollator.from_pretrained(tmp_path, catalog=catalog, tokenizer=tokenizer)


def test_unknown_keys_in_the_settings_file_are_named(tmp_path, tokenizer, catalog):
    path = saved(tmp_path, tokenizer, catalog, max_lenght=128, extra=1)
    with pytest.raises(ValueError, match=rf"{path}: unknown collator settings \['extra', 'max_lenght'\]"):
        IAMDataCollator.from_pretrained(tmp_path, catalog=catalog, tokenizer=tokenizer)
    with pytest.raises(TypeError, match=r"from_pretrained got unknown collator settings \['max_lenght'\]"):
        IAMDataCollator.from_pretrained(tmp_path, catalog=catalog, tokenizer=tokenizer, max_lenght=128)


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"max_length": 64', r":1:18: not valid JSON \(Expecting ',' delimiter\)"),
        (b"[1, 2]", ": expected a JSON object of collator settings, got list"),
        (b'{"max_length": ' + b"9" * 5000 + b"}", r": not a valid collator settings file \(ValueError: Exceeds"),
        (b" " * (4 * 1024 * 1024) + b"{}", r": more than 4194304 bytes \(collator.MAX_SETTINGS_FILE_BYTES\)"),
    ],
)
def test_a_malformed_settings_file_is_named(tmp_path, tokenizer, catalog, content, message):
    path = saved(tmp_path, tokenizer, catalog)
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"{path}{message}"):
        IAMDataCollator.from_pretrained(tmp_path, catalog=catalog, tokenizer=tokenizer)


def test_saved_settings_load_back_and_overrides_replace_them(tmp_path, tokenizer, catalog):
    path = saved(tmp_path, tokenizer, catalog, max_length=10**9)
    # the bad value is replaced before it is checked; the overrides are named with the file when one is refused
    assert IAMDataCollator.from_pretrained(tmp_path, catalog=catalog, tokenizer=tokenizer, max_length=64).max_length
    with pytest.raises(ValueError, match=rf"{path} \(with overrides \['max_item_tokens'\]\): max_length must be at"):
        IAMDataCollator.from_pretrained(tmp_path, catalog=catalog, tokenizer=tokenizer, max_item_tokens=4)
    saved(tmp_path, tokenizer, catalog, max_history_items=7)
    loaded = IAMDataCollator.from_pretrained(tmp_path, catalog=catalog, tokenizer=tokenizer)
    assert (loaded.max_length, loaded.max_history_items, loaded.prompt) == (64, 7, "user history :")
