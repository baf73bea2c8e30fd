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
