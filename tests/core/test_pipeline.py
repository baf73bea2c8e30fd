"""pipeline("item-recommendation") on a saved checkpoint: ids, texts and scores from the saved catalog."""

from __future__ import annotations

import pytest
import torch
from transformers import pipeline

from transformers_iam import IAMDataCollator, ItemRecommendationPipeline

from ..testing_utils import collator_kwargs, tiny_model


@pytest.fixture
def checkpoint(tmp_path, tokenizer, catalog):
    model = tiny_model(num_items=len(catalog))
    model.set_catalog(catalog)
    model.save_pretrained(tmp_path)
    IAMDataCollator(tokenizer, catalog, max_length=64, **collator_kwargs()).save_pretrained(tmp_path)
    return tmp_path, model


def test_pipeline_matches_the_model_and_names_items(checkpoint, catalog):
    path, model = checkpoint
    recommender = pipeline("item-recommendation", model=str(path))
    assert isinstance(recommender, ItemRecommendationPipeline)
    history = ["i3", "i7", catalog.text_of("i5")]  # an item's text works too
    top = recommender({"history": history}, top_k=4)
    assert len(top) == 4 and {"item_id", "text", "score", "index"} <= set(top[0])
    assert not {"i3", "i5", "i7"} & {row["item_id"] for row in top}
    assert all(row["text"] == catalog.text_of(row["item_id"]) for row in top)

    # the same numbers as the model fed by the saved collator, on the device the pipeline chose (a GPU when there is
    # one: another device's kernels round differently, which could reorder near-tied items)
    collator = IAMDataCollator.from_pretrained(path)
    assert collator.prompt == "user history :" and collator.item_template == "{text}"
    batch = {k: v.to(recommender.device) for k, v in collator([{"history": ["i3", "i7", "i5"]}]).items()}
    expected = model.to(recommender.device).recommend(
        **{k: v for k, v in batch.items() if k != "history_item_indices"},
        k=4,
        exclude_item_ids=batch["history_item_indices"],
    )
    assert [row["index"] for row in top] == expected.indices[0].tolist()
    torch.testing.assert_close(torch.tensor([row["score"] for row in top]), expected.scores[0].cpu())

    kept = recommender({"history": ["i3"]}, top_k=20, exclude_history=False)
    assert "i3" in {row["item_id"] for row in kept}
    assert len(recommender([{"history": ["i1"]}, {"history": ["i2", "i4"]}], top_k=2)) == 2


def test_pipeline_rejects_unknown_items(checkpoint):
    recommender = pipeline("item-recommendation", model=str(checkpoint[0]))
    with pytest.raises(ValueError, match="history item 'Nope' is neither an item id nor an item text"):
        recommender({"history": ["i1", "Nope"]})
    with pytest.raises(ValueError, match="the history is empty"):
        recommender({"history": []})


def test_pipeline_returns_what_is_left_never_an_excluded_item(checkpoint, catalog):
    recommender = pipeline("item-recommendation", model=str(checkpoint[0]))
    history = catalog.item_ids[:18]  # 2 items left
    top = recommender({"history": history}, top_k=5)
    assert sorted(row["item_id"] for row in top) == catalog.item_ids[18:]


@pytest.mark.parametrize(
    "call, error, message",
    [
        (dict(inputs={"history": "i1"}), ValueError, '"history" must be a list of item ids or texts, got the string'),
        (dict(inputs={"history": ["i1"]}, topk=3), TypeError, r"unknown arguments \['topk'\]"),
        (dict(inputs={"history": ["i1"]}, top_k=0), ValueError, r"top_k must be an int in \[1, 20\]"),
        (dict(inputs={"history": ["i1"]}, top_k=21), ValueError, r"top_k must be an int in \[1, 20\]"),
        (dict(inputs={"history": ["i1"]}, exclude_history="no"), ValueError, "exclude_history must be True or False"),
    ],
)
def test_pipeline_validates_its_arguments(checkpoint, call, error, message):
    recommender = pipeline("item-recommendation", model=str(checkpoint[0]))
    inputs = call.pop("inputs")
    with pytest.raises(error, match=message):
        recommender(inputs, **call)


def test_pipeline_refuses_unknown_arguments_at_construction(checkpoint):
    with pytest.raises(TypeError, match=r"unknown arguments \['topk'\]"):
        pipeline("item-recommendation", model=str(checkpoint[0]), topk=3)


def test_a_checkpoint_saved_without_its_tokenizer_says_so_and_how_to_save_it(tmp_path, tokenizer, catalog):
    model = tiny_model(num_items=len(catalog))
    model.set_catalog(catalog)
    model.save_pretrained(tmp_path)  # weights, config and catalog: no collator.save_pretrained, no tokenizer
    with pytest.raises(
        ValueError, match=r"has no tokenizer \(none of tokenizer_config.json, tokenizer.json\)"
    ) as error:
        pipeline("item-recommendation", model=str(tmp_path))
    assert str(tmp_path) in str(error.value) and "sentencepiece" not in str(error.value)
    for how in ("collator.save_pretrained(folder)", "tokenizer.save_pretrained(folder)", "tokenizer=tokenizer"):
        assert how in str(error.value)

    # given one, the same checkpoint serves, from a tokenizer or from a collator's
    assert len(pipeline("item-recommendation", model=str(tmp_path), tokenizer=tokenizer)({"history": ["i1"]})) == 10
    collator = IAMDataCollator(tokenizer, catalog, max_length=64, **collator_kwargs())
    assert pipeline("item-recommendation", model=str(tmp_path), collator=collator).tokenizer is tokenizer

    # tokenizer files that are there but broken keep their own error: the message above is for missing files only
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises((ValueError, OSError)) as broken:
        pipeline("item-recommendation", model=str(tmp_path))
    assert "has no tokenizer" not in str(broken.value)


def test_a_saved_pipeline_loads_with_its_prompt_settings_and_leaves_the_model_as_it_was(tmp_path, tokenizer, catalog):
    model = tiny_model(num_items=len(catalog))
    model.set_catalog(catalog)
    # prompt settings unlike the defaults: a pipeline loaded with default settings would render other prompts
    collator = IAMDataCollator(
        tokenizer, catalog, max_length=64, **{**collator_kwargs(), "prompt": "w1_0 w2_0", "max_history_items": 2}
    )
    recommender = pipeline("item-recommendation", model=model, collator=collator)
    model.save_pretrained(tmp_path / "first")  # transformers' own save records architectures and dtype
    config_before = model.config.to_dict()
    recommender.save_pretrained(tmp_path / "saved")
    assert model.config.to_dict() == config_before  # no custom_pipelines written into the live model
    assert "custom_pipelines" not in (tmp_path / "saved" / "config.json").read_text()
    assert not list((tmp_path / "saved").glob("*.py"))  # no source files copied: nothing to trust_remote_code

    again = pipeline("item-recommendation", model=str(tmp_path / "saved"))
    assert again.collator.prompt == "w1_0 w2_0" and again.collator.max_history_items == 2
    for history in (["i1", "i2", "i3", "i4"], ["i9"], ["i5", "i6", "i7"]):
        assert again({"history": history}, top_k=10) == recommender({"history": history}, top_k=10)

    # the same in-memory model saved again the usual way still loads
    model.save_pretrained(tmp_path / "plain")
    collator.save_pretrained(tmp_path / "plain")
    plain = pipeline("item-recommendation", model=str(tmp_path / "plain"))
    assert plain({"history": ["i1"]}, top_k=5) == recommender({"history": ["i1"]}, top_k=5)
    with pytest.raises(ValueError, match="push_to_hub"):
        recommender.save_pretrained(tmp_path / "pushed", push_to_hub=True)


def test_a_pipeline_knows_items_added_after_it_was_made_by_id_and_by_text(checkpoint, catalog):
    path, _ = checkpoint
    recommender = pipeline("item-recommendation", model=str(path))
    other_collator = IAMDataCollator.from_pretrained(path)  # not the pipeline's own collator
    recommender.model.add_items(["n1"], ["w3_0 w5_0"], other_collator)
    by_id = recommender({"history": ["n1", "i2"]}, top_k=5)
    by_text = recommender({"history": ["w3_0 w5_0", "i2"]}, top_k=5)
    assert by_id == by_text and "n1" not in {row["item_id"] for row in by_id}
    assert any(row["item_id"] == "n1" for row in recommender({"history": ["i2"]}, top_k=len(catalog) + 1))
