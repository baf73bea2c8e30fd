"""Adding items to a trained model (cold items): text-derived rows, the catalog binding, the cache, save and load."""

from __future__ import annotations

import copy

import pytest
import torch

from transformers_iam import IAMDataCollator, IAMForCausalRecommendation, ItemCatalog

from ..testing_utils import catalog_tokenizer, collator_kwargs, path_model, tiny_model

NEW_IDS, NEW_TEXTS = ["n1", "n2"], ["w3_0 w3_1", "w5_0"]  # texts made of words the tokenizer knows
HISTORIES = [{"history": ["i1", "i4", "i9"]}, {"history": ["i2"]}]


@pytest.fixture(
    params=[
        dict(item_id_embedding_size=None),
        dict(item_id_embedding_size=4),
        dict(item_rows_from_text=True, new_item_dropout=0.3),
    ],
    ids=["full-width-ids", "narrow-ids", "rows-from-text"],
)
def setup(request):
    full = ItemCatalog([f"i{k}" for k in range(20)] + NEW_IDS, [f"w{k}_0" for k in range(20)] + NEW_TEXTS)
    warm = ItemCatalog(full.item_ids[:20], full.texts[:20])
    tokenizer = catalog_tokenizer(full)
    collator = IAMDataCollator(tokenizer, warm, max_length=48, **collator_kwargs())
    model = tiny_model(num_layers=4, num_item_tokens=1, use_item_id_embeddings=True, **request.param)
    model.set_catalog(warm)
    with torch.no_grad():  # a "trained" model: rows and identities far from their initialisation
        model.adapter.item_embeddings.weight.normal_()
        model.item_id_embeddings.weight.normal_()
        if model.config.item_rows_from_text:  # and a trained text map, over the items' text features
            model.init_item_text_features(collator)
            model.adapter.text_to_rows.weight.normal_(std=0.2)
    return model, collator


@pytest.mark.parametrize("path", ["masked", "cached"])
def test_new_items_are_scored_and_read_from_their_text(path, setup):
    model, collator = setup
    model = path_model(model, path, collator)
    model.set_catalog(collator.catalog)
    before = model.adapter.item_embeddings.weight.detach().clone()
    identities = model.item_id_embeddings(torch.arange(20)).detach()
    extended = model.add_items(NEW_IDS, NEW_TEXTS, collator)
    assert extended.item_ids[-2:] == NEW_IDS and collator.catalog == extended == model.catalog
    torch.testing.assert_close(model.item_id_embeddings(torch.arange(20)), identities)  # trained items keep theirs
    assert model.config.num_items == 22 and model.config.catalog_fingerprint == extended.fingerprint
    torch.testing.assert_close(model.adapter.item_embeddings.weight[:20], before)  # trained rows untouched
    assert model.item_id_embeddings.weight[20:].abs().sum() == 0  # no identity: read from their text alone
    batch = collator([{"history": ["i1", "n1", "i4"]}, {"history": ["n2"]}])
    with torch.no_grad():
        logits = model(**batch).logits
        reference = model(**batch, path="masked").logits
    assert logits.shape == (2, 22)
    torch.testing.assert_close(logits, reference, atol=1e-4, rtol=1e-4)  # the extended cache serves the new items
    top = model.recommend(**batch, k=19, exclude_item_ids=batch["history_item_indices"]).item_ids
    assert "n2" in top[0] and "n1" not in top[0]


def test_a_score_offset_moves_every_new_item_by_it_for_every_user_and_nothing_else(setup):
    model, collator = setup
    shifted = copy.deepcopy(model)
    shifted_collator = copy.deepcopy(collator)
    model.add_items(NEW_IDS, NEW_TEXTS, collator)
    shifted.add_items(NEW_IDS, NEW_TEXTS, shifted_collator, score_offset=-1.5)
    batch = collator(HISTORIES)
    with torch.no_grad():
        plain, moved = model(**batch).logits, shifted(**batch).logits
    torch.testing.assert_close(moved[:, :20], plain[:, :20])
    torch.testing.assert_close(moved[:, 20:], plain[:, 20:] - 1.5)
    with pytest.raises(ValueError, match="score_offset must be a finite number, got nan"):
        copy.deepcopy(model).add_items(["n3"], ["w3_0"], copy.deepcopy(collator), score_offset=float("nan"))


def test_text_rows_follow_the_text_when_the_trained_rows_do():
    # trained rows that are a linear function of the text features: new items' rows follow the same function
    from transformers_iam.core.decoder import decoder_parts
    from transformers_iam.core.item_states import item_text_features

    words = [f"w{k}" for k in range(40)]
    texts = [f"{words[k % 40]} {words[(7 * k + 3) % 40]}" for k in range(120)]
    warm = ItemCatalog([f"i{k}" for k in range(120)], texts)
    collator = IAMDataCollator(catalog_tokenizer(warm), warm, max_length=48, **collator_kwargs())
    model = tiny_model(num_layers=4, num_items=120)
    model.set_catalog(warm)
    features = item_text_features(decoder_parts(model.model), [collator.item_token_ids(k) for k in range(120)], 2)
    mapping = torch.randn(features.shape[1], 33, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        rows = features @ mapping
        model.adapter.item_embeddings.weight.copy_(rows[:, :32])
        model.adapter.item_embeddings.bias.copy_(rows[:, 32])
    new_texts = ["w1 w2", "w30 w5"]  # word pairs no trained item has
    model.add_items(["n1", "n2"], new_texts, collator)
    new_features = item_text_features(decoder_parts(model.model), [collator.item_token_ids(k) for k in (120, 121)], 2)
    head = model.adapter.item_embeddings
    predicted = torch.cat([head.weight[120:], head.bias[120:, None]], dim=1).detach()
    cosine = torch.nn.functional.cosine_similarity(predicted, new_features @ mapping)
    assert (cosine > 0.9).all(), cosine


def test_the_extended_model_saves_and_loads_with_its_catalog(tmp_path, setup):
    model, collator = setup
    model.add_items(NEW_IDS, NEW_TEXTS, collator)
    batch = collator([{"history": ["n1", "i2"]}])
    model.save_pretrained(tmp_path)
    reloaded = IAMForCausalRecommendation.from_pretrained(tmp_path).eval()
    assert reloaded.catalog == model.catalog and reloaded.config.num_items == 22
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model.eval()(**batch).logits)


def test_adding_what_is_already_there_is_refused(setup):
    model, collator = setup
    with pytest.raises(ValueError, match=r"items \['i3'\] are already in the catalog"):
        model.add_items(["i3"], ["w3_0"], collator)
    with pytest.raises(ValueError, match="add_items extends the model's catalog"):
        tiny_model(num_layers=4).add_items(NEW_IDS, NEW_TEXTS, collator)
    assert model.config.num_items == 20 and len(collator.catalog) == 20  # nothing changed


@pytest.mark.parametrize(
    "item_ids, texts, error, message",
    [
        ("xyz", ["a", "b", "c"], TypeError, "item_ids must be a list of item ids, got 'xyz'"),  # not x, y, z
        (["n1"], "w3_0", TypeError, "texts must be a list of texts"),
        (["n1", "n2"], ["w3_0"], ValueError, "2 item_ids but 1 texts"),
        ([], [], ValueError, "at least one item"),
        (["n1"], ["  "], ValueError, "item 'n1' has an empty text"),
        (["n1", "n1"], ["w3_0", "w5_0"], ValueError, "item id 'n1' appears twice"),
        (["n1"], [3], ValueError, "item 'n1' has an empty text"),
    ],
)
def test_add_items_checks_its_arguments_before_changing_anything(setup, item_ids, texts, error, message):
    model, collator = setup
    with pytest.raises(error, match=message):
        model.add_items(item_ids, texts, collator)
    assert model.config.num_items == 20 and len(model.catalog) == 20 and len(collator.catalog) == 20
    with pytest.raises(TypeError, match="renderer=, an IAMDataCollator, got dict"):
        model.add_items(NEW_IDS, NEW_TEXTS, {})


def test_add_items_on_a_lora_model_grows_every_copy_and_its_saved_adapter_loads_back(tmp_path, setup):
    from peft import PeftModel

    from transformers_iam.integrations.peft import apply_lora

    model, collator = setup
    saved_warm = tmp_path / "warm"
    model.save_pretrained(saved_warm)
    lora = apply_lora(model, rank=4).eval()
    with torch.no_grad():  # a "trained" LoRA model: its copy of the head differs from PEFT's original
        lora.base_model.model.adapter.modules_to_save["default"].item_embeddings.weight.mul_(2)
    lora.add_items(NEW_IDS, NEW_TEXTS, collator)
    batch = collator([{"history": ["n1", "i2"]}, {"history": ["i5"]}])
    with torch.no_grad():
        logits = lora(**batch).logits
    assert logits.shape == (2, 22) and model.config.num_items == 22
    top = lora.recommend(**batch, k=22).item_ids
    assert {"n1", "n2"} <= set(top[1])
    with lora.disable_adapter(), torch.no_grad():  # PEFT's original copies grew too
        assert lora(**batch).logits.shape == (2, 22)

    lora.save_pretrained(tmp_path / "lora")  # the adapter holds the new rows and the grown id table
    base = IAMForCausalRecommendation.from_pretrained(saved_warm)
    base_collator = IAMDataCollator(collator.tokenizer, base.catalog, max_length=48, **collator_kwargs())
    base.add_items(NEW_IDS, NEW_TEXTS, base_collator)  # as docs/lora.md says: the same items first
    reloaded = PeftModel.from_pretrained(base, tmp_path / "lora").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, logits)


def test_a_failed_extension_leaves_no_tokens_behind_for_the_next_one(setup, monkeypatch):
    model, collator = setup
    text_features = model._text_features

    def out_of_memory(sequences):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(model, "_text_features", out_of_memory)
    with pytest.raises(RuntimeError, match="out of memory"):
        model.add_items(["n1"], ["w3_0 w3_1"], collator)
    assert len(collator.catalog) == 20 and model.config.num_items == 20
    monkeypatch.setattr(model, "_text_features", text_features)
    model.add_items(["n2"], ["w5_0"], collator)  # another item at the same index
    assert collator.item_token_ids(20) == collator.tokenizer("w5_0", add_special_tokens=False)["input_ids"]


def test_a_failure_partway_leaves_every_copy_as_it_was(setup, monkeypatch):
    # PEFT keeps two copies of the head: the second copy's fit failing must not leave the first one grown
    from transformers_iam.integrations.peft import apply_lora

    model, collator = setup
    lora = apply_lora(model, rank=4)
    grow = model._grown_head
    calls = []

    def fails_the_second_time(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return grow(*args, **kwargs)

    monkeypatch.setattr(model, "_grown_head", fails_the_second_time)
    with pytest.raises(RuntimeError, match="out of memory"):
        lora.add_items(NEW_IDS, NEW_TEXTS, collator)
    wrapper = model.adapter
    copies = (wrapper.original_module, *wrapper.modules_to_save.values())
    assert [copy.item_embeddings.out_features for copy in copies] == [20, 20]
    assert model.config.num_items == 20 and len(collator.catalog) == 20
    if model.config.item_rows_from_text:
        assert [copy.item_text_features.shape[0] for copy in copies] == [20, 20]
