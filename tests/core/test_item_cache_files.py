"""The item-state cache saved beside a checkpoint: loaded instead of rebuilt when it was computed for the model and
its rendering, rebuilt and saved over when not (other weights, another rendering, a corrupt file), and built under a
progress bar that can be turned off."""

from __future__ import annotations

import json
import os

import pytest
import torch
from transformers.utils import logging as hf_logging

from transformers_iam import IAMDataCollator
from transformers_iam.core.item_cache import ItemStateCache

from ..testing_utils import catalog_tokenizer, collator_kwargs, same_weights_with, tiny_model
from .test_item_states import HISTORIES, _log_of, frozen_model


def make_collator(tokenizer, catalog, **kwargs) -> IAMDataCollator:
    return IAMDataCollator(tokenizer, catalog, max_length=64, padding_side="left", **collator_kwargs(), **kwargs)


def saved_json(folder) -> dict:
    with open(os.path.join(folder, "item_cache.json"), encoding="utf-8") as handle:
        return json.load(handle)


def logits(model, batch, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch, **kwargs).logits


@pytest.mark.parametrize("num_item_tokens", [None, 1])
def test_a_saved_cache_is_loaded_instead_of_rebuilt_with_the_same_logits(num_item_tokens, tokenizer, catalog, tmp_path):
    collator = make_collator(tokenizer, catalog)
    batch = collator(HISTORIES)
    built = frozen_model("llama", "stacked", num_layers=4, num_item_tokens=num_item_tokens)
    built_cache = built.enable_item_cache(collator, cache_dir=tmp_path)
    first = saved_json(tmp_path)
    assert first["num_items"] == built_cache.num_items and first["weights_digest"] == built_cache.record.weights_digest
    assert set(os.listdir(tmp_path)) == {"item_cache.json", first["states_file"]}

    fresh = same_weights_with(built)  # the same weights: another process loading the checkpoint
    fresh.model.requires_grad_(False)
    log = _log_of(lambda: fresh.enable_item_cache(collator, cache_dir=tmp_path))
    assert "rebuilt" not in log and saved_json(tmp_path) == first  # loaded, not rebuilt and saved over
    loaded = fresh.item_cache
    assert loaded.saved_record == loaded.record == built_cache.record
    assert torch.equal(loaded.states, built_cache.states) and loaded.token_sequences == built_cache.token_sequences
    torch.testing.assert_close(logits(fresh, batch), logits(built, batch), rtol=0, atol=0)
    torch.testing.assert_close(logits(fresh, batch), logits(fresh, batch, path="masked"), atol=1e-4, rtol=1e-4)


def test_a_loaded_cache_is_guarded_as_a_built_one(tokenizer, catalog, tmp_path):
    collator = make_collator(tokenizer, catalog)
    model = frozen_model("llama", "stacked", num_layers=4)
    model.enable_item_cache(collator, cache_dir=tmp_path)
    model.disable_item_cache()
    model.enable_item_cache(collator, cache_dir=tmp_path)  # loaded
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(1.01)
    with pytest.raises(RuntimeError, match="cached item states are stale"):
        model(**collator(HISTORIES))
    trainable = tiny_model(num_layers=4)  # a saved cache never lifts the refusals
    with pytest.raises(ValueError, match="cached weights are trainable"):
        trainable.enable_item_cache(collator, cache_dir=tmp_path)


@pytest.mark.parametrize("change", ["one cached layer's weight", "another catalog text", "num_item_tokens"])
def test_a_cache_saved_for_another_model_or_rendering_is_rebuilt_and_saved_over(change, tokenizer, catalog, tmp_path):
    collator = make_collator(tokenizer, catalog)
    model = frozen_model("llama", "stacked", num_layers=4)
    model.enable_item_cache(collator, cache_dir=tmp_path)
    before = saved_json(tmp_path)
    model.disable_item_cache()
    if change.startswith("one cached layer"):
        with torch.no_grad():
            model.model.layers[1].self_attn.v_proj.weight.mul_(1.01)
        field = "weights_digest"
    elif change.startswith("another catalog"):
        texts = list(catalog.texts)
        texts[3], texts[4] = texts[4], texts[3]  # same words, other items: another rendering
        other = type(catalog)(list(catalog.item_ids), texts)
        collator = make_collator(catalog_tokenizer(other), other)
        field = "rendering_digest"
    else:
        model.config.num_item_tokens = 1
        field = "num_item_tokens"
    log = _log_of(lambda: model.enable_item_cache(collator, cache_dir=tmp_path))
    assert f"not used, rebuilt and saved over it: saved for another model, {field} differ" in log
    after = saved_json(tmp_path)
    assert after[field] != before[field] and after["states_file"] != before["states_file"]
    assert after[field] == getattr(model.item_cache.record, field)
    assert not os.path.exists(tmp_path / before["states_file"])  # the old states went with their record
    batch = collator(HISTORIES)
    torch.testing.assert_close(logits(model, batch), logits(model, batch, path="masked"), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("damage", ["truncated", "not safetensors", "record not json"])
def test_a_corrupt_saved_cache_is_named_by_load_and_rebuilt_by_enable(damage, tokenizer, catalog, tmp_path):
    collator = make_collator(tokenizer, catalog)
    model = frozen_model("llama", "stacked", num_layers=4)
    model.enable_item_cache(collator, cache_dir=tmp_path)
    states_file = saved_json(tmp_path)["states_file"]
    path = tmp_path / (states_file if damage != "record not json" else "item_cache.json")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x80\x04 pickled? no" + data[:20])
    with pytest.raises(ValueError, match=os.path.basename(path).replace(".", r"\.")):
        ItemStateCache.load(tmp_path)
    model.disable_item_cache()
    log = _log_of(lambda: model.enable_item_cache(collator, cache_dir=tmp_path))
    assert "not used, rebuilt and saved over it: unreadable" in log and os.path.basename(path) in log
    assert ItemStateCache.load(tmp_path).num_items == len(catalog)  # whole again
    batch = collator(HISTORIES)
    torch.testing.assert_close(logits(model, batch), logits(model, batch, path="masked"), atol=1e-4, rtol=1e-4)


def test_a_record_naming_another_path_is_refused(tokenizer, catalog, tmp_path):
    collator = make_collator(tokenizer, catalog)
    frozen_model("llama", "stacked", num_layers=4).enable_item_cache(collator, cache_dir=tmp_path)
    record = saved_json(tmp_path)
    record["states_file"] = "../elsewhere.safetensors"
    (tmp_path / "item_cache.json").write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(ValueError, match="is not a name ItemStateCache.save writes"):
        ItemStateCache.load(tmp_path)


def test_the_build_shows_a_progress_bar_that_can_be_disabled(tokenizer, catalog, capsys):
    collator = make_collator(tokenizer, catalog)
    model = frozen_model("llama", "stacked", num_layers=4)
    capsys.readouterr()
    several_batches = model.enable_item_cache(collator, batch_size=6)
    shown = capsys.readouterr().err
    assert "item-state cache" in shown and "item/s" in shown and f"{len(catalog)}/{len(catalog)}" in shown
    hf_logging.disable_progress_bar()
    try:
        one_by_one = model.enable_item_cache(collator, batch_size=1)
    finally:
        hf_logging.enable_progress_bar()
    assert "item-state cache" not in capsys.readouterr().err
    # batches change nothing of what is stored
    torch.testing.assert_close(one_by_one.states, several_batches.states, atol=1e-5, rtol=1e-5)


def test_distinct_items_are_encoded_once(tokenizer, catalog):
    collator = make_collator(tokenizer, catalog)
    model = frozen_model("llama", "stacked", num_layers=4)
    sequences = [collator.item_token_ids(index) for index in range(len(catalog))]
    cache = model.enable_item_cache(sequences + sequences[:5])
    assert cache.num_items == len(catalog) and len(cache.token_sequences) == len(catalog) + 5
    assert torch.equal(cache.states_of_sequence(len(catalog)), cache.states_of_sequence(0))


@pytest.mark.parametrize("num_item_tokens", [None, 1])
def test_rows_from_text_read_in_the_cache_pass_are_the_rows_of_their_own_pass(
    num_item_tokens, tokenizer, catalog, tmp_path
):
    collator = make_collator(tokenizer, catalog)
    apart = frozen_model("llama", "stacked", num_layers=4, num_item_tokens=num_item_tokens)
    together, loading = same_weights_with(apart), same_weights_with(apart)
    for model in (together, loading):
        model.model.requires_grad_(False)
    random_rows = apart.adapter.item_embeddings.weight.clone()
    apart.init_item_embeddings_from_text(collator)
    apart_cache = apart.enable_item_cache(collator)

    together_cache = together.enable_item_cache(collator, cache_dir=tmp_path, init_item_embeddings_from_text=True)
    assert torch.equal(together_cache.states, apart_cache.states)  # the cache is the one built alone
    rows = together.adapter.item_embeddings.weight
    torch.testing.assert_close(rows, apart.adapter.item_embeddings.weight, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(rows, random_rows, atol=1e-3)

    # a cache loaded from the folder reads no item: the rows are then read in a pass of their own
    log = _log_of(lambda: loading.enable_item_cache(collator, cache_dir=tmp_path, init_item_embeddings_from_text=True))
    assert "rebuilt" not in log
    torch.testing.assert_close(loading.adapter.item_embeddings.weight, rows, atol=1e-5, rtol=1e-4)

    with pytest.raises(ValueError, match="got token ids for 25 items, the catalog has 20"):
        loading.enable_item_cache(
            [collator.item_token_ids(index % 20) for index in range(25)], init_item_embeddings_from_text=True
        )
    sequences = [collator.item_token_ids(index) for index in range(20)]
    sequences[3] = []
    with pytest.raises(ValueError, match=r"1 items have no tokens \(catalog indices \[3\]"):
        loading.enable_item_cache(sequences, init_item_embeddings_from_text=True)
