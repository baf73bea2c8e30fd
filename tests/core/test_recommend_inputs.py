"""model.recommend and ranking.exclude_items: every input is checked where it enters, each error naming the argument
(and, for exclusions, the user row and the value), before a forward runs."""

from __future__ import annotations

import pytest
import torch

from transformers_iam import IAMDataCollator
from transformers_iam.core.ranking import exclude_items

from ..testing_utils import SEGMENTS, collator_kwargs, random_ids, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model()  # 20 items; SEGMENTS / random_ids(): one user of 11 tokens


def recommend(model, **overrides):
    arguments = {"input_ids": random_ids(), "item_segment_ids": SEGMENTS, "k": 3, **overrides}
    return model.recommend(**arguments)


def test_one_dimensional_input_ids_say_the_shape_wanted(model):
    ids = random_ids()[0]
    with pytest.raises(
        ValueError, match=r"input_ids must be 2-D \[batch, tokens\], got shape \(11,\): for one user pass input_ids"
    ):
        recommend(model, input_ids=ids, item_segment_ids=SEGMENTS[0])


def test_input_ids_given_as_a_flat_list(model):
    with pytest.raises(ValueError, match=r"input_ids must be a 2-D integer tensor \[batch, tokens\].*got list"):
        recommend(model, input_ids=random_ids()[0].tolist())


def test_float_input_ids(model):
    with pytest.raises(ValueError, match=r"input_ids must hold integer token ids, got a torch.float32 tensor"):
        recommend(model, input_ids=random_ids().float())


def test_empty_input_ids(model):
    with pytest.raises(ValueError, match=r"input_ids must hold at least one user and one token, got shape \(0, 11\)"):
        recommend(model, input_ids=random_ids()[:0], item_segment_ids=SEGMENTS[:0])


def test_attention_mask_of_another_shape(model):
    with pytest.raises(ValueError, match=r"attention_mask must have the shape of input_ids \(1, 11\), got \(1, 10\)"):
        recommend(model, attention_mask=torch.ones(1, 10, dtype=torch.long))


def test_attention_mask_as_a_list(model):
    with pytest.raises(ValueError, match=r"attention_mask must be a tensor of shape \(1, 11\).*got list"):
        recommend(model, attention_mask=[[1] * 11])


def test_attention_mask_values_other_than_0_and_1(model):
    mask = torch.ones(1, 11, dtype=torch.long)
    mask[0, 3] = 2
    with pytest.raises(ValueError, match=r"attention_mask must hold 0 \(padding\) or 1 \(token\), got \[2\]"):
        recommend(model, attention_mask=mask)


def test_float_item_segment_ids(model):
    with pytest.raises(ValueError, match="item_segment_ids must be an integer tensor, got torch.float32"):
        recommend(model, item_segment_ids=SEGMENTS.float())


def test_item_segment_ids_of_another_shape(model):
    with pytest.raises(ValueError, match=r"item_segment_ids must have the shape of input_ids \(1, 11\), got \(11,\)"):
        recommend(model, item_segment_ids=SEGMENTS[0])


def test_exclusions_as_a_flat_list_name_the_user_row(model):
    with pytest.raises(ValueError, match=r"exclude_item_ids: user 0 must be a list of catalog indices, got int 1"):
        recommend(model, exclude_item_ids=[1, 2])


def test_exclusions_as_a_one_dimensional_tensor(model):
    with pytest.raises(ValueError, match=r"exclude_item_ids must be 2-D \[users, items\].*got shape \(2,\)"):
        recommend(model, exclude_item_ids=torch.tensor([1, 2]))


def test_float_exclusion_tensor(model):
    with pytest.raises(ValueError, match="exclude_item_ids must hold integer catalog indices, got a torch.float32"):
        recommend(model, exclude_item_ids=torch.tensor([[1.0, 2.0]]))


@pytest.mark.parametrize("value, shown", [(1.0, r"1\.0 \(float\)"), (True, r"True \(bool\)"), ("3", r"'3' \(str\)")])
def test_exclusion_values_that_are_not_ints(model, value, shown):
    # torch.tensor(..., dtype=long) would have made 1.0 and True the index 1, and 1.7 the index 1 too
    with pytest.raises(ValueError, match=rf"exclude_item_ids: user 0 has {shown}: excluded item indices must be int"):
        recommend(model, exclude_item_ids=[[4, value]])


def test_exclusions_for_another_number_of_users(model):
    with pytest.raises(ValueError, match="exclude_item_ids has rows for 2 users but the inputs have 1"):
        recommend(model, exclude_item_ids=[[1], [2]])


def test_exclusion_outside_the_catalog_names_user_and_value(model):
    ids, segments = random_ids().repeat(2, 1), SEGMENTS.repeat(2, 1)
    with pytest.raises(ValueError, match=r"exclude_item_ids: user 1 has 20: excluded item indices must be catalog"):
        model.recommend(ids, item_segment_ids=segments, k=3, exclude_item_ids=[[0, 1], [5, 20]])
    with pytest.raises(ValueError, match=r"exclude_item_ids: user 1 has -2: excluded item indices must be catalog"):
        model.recommend(ids, item_segment_ids=segments, k=3, exclude_item_ids=torch.tensor([[0, -1], [-2, 3]]))


def test_a_misspelt_argument_is_refused_not_ignored(model):
    # the evaluation's own name for the exclusions: silently dropped, the history would be recommended back
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['exclude_item_indices'\]"):
        recommend(model, exclude_item_indices=[[1]])


def test_the_collators_batch_still_goes_in_whole(model, tokenizer, catalog):
    collator = IAMDataCollator(tokenizer, catalog, max_length=64, **collator_kwargs())
    batch = collator([{"history": ["i1", "i2"], "target": "i3"}, {"history": ["i4"], "target": "i5"}])
    top = model.recommend(**batch, k=4, exclude_item_ids=batch["history_item_indices"])
    assert top.indices.shape == (2, 4)
    assert not {1, 2} & set(top.indices[0].tolist()) and 4 not in top.indices[1].tolist()


def test_exclude_items_names_the_callers_argument():
    scores = torch.zeros(2, 5)
    with pytest.raises(ValueError, match=r"history_item_indices: user 1 has 0\.5 \(float\)"):
        exclude_items(scores, [[1], [0.5]], name="history_item_indices")
    with pytest.raises(ValueError, match=r"item_indices: user 0 has 5: excluded item indices must be catalog indices"):
        exclude_items(scores, torch.tensor([[5], [0]]))
    with pytest.raises(ValueError, match="item_indices must be a 2-D integer tensor or a list of lists"):
        exclude_items(scores, "12")
    assert exclude_items(scores, [[1], []])[0].isinf().tolist() == [False, True, False, False, False]
