"""Item id embeddings: one learned vector per catalog item, added where items enter the layers above the intra run."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError

from transformers_iam import IAMDataCollator
from transformers_iam.experiments import RecommendationTrainingArguments, RunArguments
from transformers_iam.experiments.build import make_optimizer

from ..testing_utils import collator_kwargs, same_weights_with, tiny_model

HISTORIES = [
    {"history": ["i3", "i1", "i5"], "target": "i4"},
    {"history": ["i7", "i9", "i2", "i6"], "target": "i3"},
]


@pytest.fixture
def collator(tokenizer, catalog):
    return IAMDataCollator(tokenizer, catalog, max_length=48, **collator_kwargs())


@pytest.mark.parametrize("num_item_tokens, embedding_size", [(None, None), (1, None), (1, 4)])
def test_an_untrained_model_is_the_text_only_model(num_item_tokens, embedding_size, collator):
    text_only = tiny_model(num_layers=4, num_item_tokens=num_item_tokens)
    with_ids = same_weights_with(text_only, use_item_id_embeddings=True, item_id_embedding_size=embedding_size)
    assert with_ids.item_id_embeddings.weight.abs().sum() == 0
    batch = collator(HISTORIES)
    with torch.no_grad():
        torch.testing.assert_close(with_ids(**batch).logits, text_only(**batch).logits)
        # and the vectors are really added where items enter the layers above
        with_ids.item_id_embeddings.weight[collator.catalog.index_of("i9")] = 1.0
        changed = with_ids(**batch).logits
    torch.testing.assert_close(changed[0], text_only(**batch).logits[0].detach())  # row 0 has no i9
    assert not torch.allclose(changed[1], text_only(**batch).logits[1].detach())


@pytest.mark.parametrize("embedding_size", [None, 4])
def test_an_item_never_trained_keeps_its_zero_vector(embedding_size, collator):
    model = tiny_model(
        num_layers=4, num_item_tokens=1, use_item_id_embeddings=True, item_id_embedding_size=embedding_size
    ).train()
    optimizer = make_optimizer(model, RecommendationTrainingArguments(learning_rate=1e-2, adapter_learning_rate=1e-2))
    batch = collator(HISTORIES)
    for _ in range(3):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    weight = model.item_id_embeddings.weight.detach()
    seen = {collator.catalog.index_of(item) for example in HISTORIES for item in example["history"]}
    for index in range(len(collator.catalog)):
        if index in seen:
            assert weight[index].abs().sum() > 0, index
        else:  # scored and read from its text alone
            assert weight[index].abs().sum() == 0, index


def test_they_train_at_their_own_rate(collator):
    # Adam's first step moves every weight with a gradient by about its learning rate
    model = tiny_model(num_layers=4, num_item_tokens=1, use_item_id_embeddings=True)
    config = RecommendationTrainingArguments(
        learning_rate=1e-4, adapter_learning_rate=1e-2, item_id_embedding_learning_rate=1e-3
    )
    optimizer = make_optimizer(model, config)
    before = model.item_id_embeddings.weight.detach().clone()
    model(**collator(HISTORIES)).loss.backward()
    optimizer.step()
    assert (model.item_id_embeddings.weight.detach() - before).abs().max() == pytest.approx(1e-3, rel=0.1)


def test_they_need_the_item_of_each_segment(collator):
    model = tiny_model(num_layers=4, use_item_id_embeddings=True)
    batch = collator(HISTORIES)
    del batch["segment_item_indices"]
    with pytest.raises(ValueError, match="pass segment_item_indices"):
        model(**batch)
    batch = collator(HISTORIES)
    batch["segment_item_indices"][1, 2] = -1
    with pytest.raises(ValueError, match="has no catalog index"):
        model(**batch)
    batch["segment_item_indices"][1, 2] = 20
    with pytest.raises(ValueError, match=r"segment_item_indices must be catalog indices in \[0, 20\)"):
        model(**batch)


def test_a_narrow_table_is_projected_to_the_hidden_size_and_saved(collator, tmp_path):
    model = tiny_model(num_layers=4, num_item_tokens=1, use_item_id_embeddings=True, item_id_embedding_size=4)
    hidden_size = model.config.text_config.hidden_size
    assert model.item_id_embeddings.weight.shape == (20, 4) and model.item_id_embeddings.projection.weight.shape == (
        hidden_size,
        4,
    )
    with torch.no_grad():  # a "trained" table: its rows enter through the projection
        model.item_id_embeddings.weight.normal_()
    index = torch.tensor([collator.catalog.index_of("i9")])
    expected = model.item_id_embeddings.projection.weight @ model.item_id_embeddings.weight[index[0]]
    torch.testing.assert_close(model.item_id_embeddings(index)[0], expected)
    batch = collator(HISTORIES)
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path).eval()
    assert reloaded.config.item_id_embedding_size == 4
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model.eval()(**batch).logits)


def test_a_narrow_table_needs_its_own_vectors():
    with pytest.raises(StrictDataclassError, match="set use_item_id_embeddings=True"):
        tiny_model(num_layers=4, num_item_tokens=1, item_id_embedding_size=4)
    with pytest.raises(StrictDataclassError):
        tiny_model(num_layers=4, use_item_id_embeddings=True, item_id_embedding_size=0)
    with pytest.raises(StrictDataclassError, match="set use_item_id_embeddings=True"):
        RunArguments.from_preset(None, item_id_embedding_size=64)  # the run is checked by IAMConfig's own rules
