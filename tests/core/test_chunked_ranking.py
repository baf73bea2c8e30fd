"""Ranking a catalog in chunks of items (core/ranking.py): the same top-k and target ranks as the full score matrix,
without it; recommend and the pipeline on that path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import pipeline

from transformers_iam import IAMDataCollator
from transformers_iam.core import ranking
from transformers_iam.core.ranking import (
    chunked_target_ranks,
    chunked_topk,
    exclude_items,
    items_left,
    ranking_chunk_size,
)
from transformers_iam.recsys.metrics import target_ranks

from ..testing_utils import SEGMENTS, collator_kwargs, random_ids, tiny_model

CHUNK_SIZES = [1, 7, 64, 999, 1000, 4096]


def random_rows(num_items=1000, dim=16, users=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    draw = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    return draw(users, dim), draw(num_items, dim), draw(num_items)


def tied_rows(num_items=300, dim=4, users=3, seed=0):
    """Small integers: every score is exact in float32 whatever the order of the sums, and many scores tie."""
    generator = torch.Generator().manual_seed(seed)
    draw = lambda *shape: torch.randint(-2, 3, shape, generator=generator).float()  # noqa: E731
    return draw(users, dim), draw(num_items, dim), draw(num_items)


EXCLUSIONS = [[5, 5, 999, -1], [], [0, 1, 2, 3, 4, 500]]  # a repeat, padding, an empty row


def scores_of(rows: list[dict]) -> torch.Tensor:
    return torch.tensor([row["score"] for row in rows])  # float32: compared at float32's tolerance


def lower_index_first(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The documented tie rule, from the full matrix: score descending, then catalog index ascending."""
    orders = [sorted(range(len(row)), key=lambda i: (-row[i], i))[:k] for row in scores.tolist()]
    indices = torch.tensor(orders)
    return scores.gather(1, indices), indices


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
@pytest.mark.parametrize("k", [1, 10, 994])
def test_chunked_topk_is_the_full_topk(chunk_size, k):
    users, weight, bias = random_rows()
    full = exclude_items(F.linear(users, weight, bias), EXCLUSIONS).topk(k)
    scores, indices = chunked_topk(users, weight, bias, k, EXCLUSIONS, chunk_size)
    assert torch.equal(indices, full.indices)
    torch.testing.assert_close(scores, full.values, rtol=0, atol=1e-5)
    assert not any(set(row) & set(excluded) for row, excluded in zip(indices.tolist(), EXCLUSIONS))


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES[:4])
@pytest.mark.parametrize("k", [1, 3, 50, 300])
def test_ties_go_to_the_lower_index_whatever_the_chunk_size(chunk_size, k):
    users, weight, bias = tied_rows()
    full = F.linear(users, weight, bias)
    scores, indices = chunked_topk(users, weight, bias, k, chunk_size=chunk_size)
    expected_scores, expected_indices = lower_index_first(full, k)
    assert torch.equal(indices, expected_indices) and torch.equal(scores, expected_scores)
    assert torch.equal(scores, full.topk(k).values)  # torch's values; only the order of tied items is ours


def test_k_up_to_what_is_left_and_no_further():
    users, weight, bias = random_rows(num_items=50)
    exclusions = [[0, 1, 1], [], [49]]
    left = items_left(ranking.check_exclusions(exclusions, 3, 50), 50)
    assert left.tolist() == [48, 50, 49]
    scores, indices = chunked_topk(users, weight, bias, 48, exclusions, chunk_size=8)
    assert torch.isfinite(scores).all() and not {0, 1} & set(indices[0].tolist())
    with pytest.raises(ValueError, match=r"k=49 but user 0 has only 48 items left after excluding 2; pass k <= 48"):
        chunked_topk(users, weight, bias, 49, exclusions, chunk_size=8)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 50\]"):
        chunked_topk(users, weight, bias, 51, chunk_size=8)
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
        chunked_topk(users, weight, bias, 5, chunk_size=0)
    with pytest.raises(ValueError, match="exclude: user 2 has 50: excluded item indices must be"):
        chunked_topk(users, weight, bias, 5, [[], [], [50]])


def test_a_nan_score_is_refused():
    users, weight, bias = random_rows(num_items=50)
    bias[17] = float("nan")
    with pytest.raises(ValueError, match="a score is NaN"):
        chunked_topk(users, weight, bias, 5, chunk_size=8)


def test_no_more_than_a_chunk_of_scores_is_held(monkeypatch):
    users, weight, bias = random_rows()
    widths = []
    scored = ranking._chunk_scores

    def spy(*args):
        scores = scored(*args)
        widths.append(scores.shape)
        return scores

    monkeypatch.setattr(ranking, "_chunk_scores", spy)
    chunked_topk(users, weight, bias, 10, chunk_size=128)
    chunked_target_ranks(users, weight, bias, torch.tensor([0, 500, 999]), chunk_size=128)
    assert widths and max(shape[1] for shape in widths) == 128 and {shape[0] for shape in widths} == {3}


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES[:5])
@pytest.mark.parametrize("rows", [random_rows, tied_rows])
def test_chunked_target_ranks_are_target_ranks(chunk_size, rows):
    users, weight, bias = rows()
    num_items = weight.shape[0]
    targets = torch.tensor([5, 0, num_items - 1])  # the first user's target is in its exclusions: still ranked
    exclusions = [[5, 5, 7, -1], [], [0, 1, 2, 3, 4, num_items - 1]]
    full = F.linear(users, weight, bias)
    for exclude in (None, exclusions):
        expected = target_ranks(full, targets, exclude)
        assert torch.equal(chunked_target_ranks(users, weight, bias, targets, exclude, chunk_size), expected)


def test_a_row_equal_to_the_targets_ties_with_it():
    users, weight, bias = random_rows(num_items=200)
    weight[150], bias[150] = weight[3], bias[3]  # another item scored exactly as the target: a pessimistic tie
    targets = torch.tensor([3, 3, 3])
    expected = target_ranks(F.linear(users, weight, bias), targets)
    ranks = chunked_target_ranks(users, weight, bias, targets, chunk_size=64)
    assert torch.equal(ranks, expected)
    below = bias.clone()
    below[150] -= 1000.0  # the same item far below: one item fewer at or above each target
    assert torch.equal(chunked_target_ranks(users, weight, below, targets, chunk_size=64), ranks - 1)


def test_chunked_target_ranks_refuse_bad_targets():
    users, weight, bias = random_rows(num_items=20)
    with pytest.raises(ValueError, match=r"targets must be 3 catalog indices in \[0, 20\)"):
        chunked_target_ranks(users, weight, bias, torch.tensor([0, 1, 20]))
    bias[1] = float("nan")
    with pytest.raises(ValueError, match="a target's score is NaN"):
        chunked_target_ranks(users, weight, bias, torch.tensor([0, 1, 2]))


def test_the_chunk_size_is_chosen_by_the_catalogs_size():
    assert ranking_chunk_size(None, ranking.CHUNKED_RANKING_THRESHOLD) is None
    assert ranking_chunk_size(None, ranking.CHUNKED_RANKING_THRESHOLD + 1) == ranking.DEFAULT_CHUNK_SIZE
    for bad in (0, 2.0, True, "8"):
        with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
            ranking_chunk_size(bad, 10)


# -- the model ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("supervision", ["last", "every_item"])
def test_user_states_are_what_the_adapter_scores(supervision):
    model = tiny_model(supervision=supervision)
    ids, segments = random_ids().repeat(2, 1), SEGMENTS.repeat(2, 1)
    logits = model(input_ids=ids, item_segment_ids=segments).logits
    states = model.user_states(input_ids=ids, item_segment_ids=segments)
    assert states.shape == (2, model.config.resolved_adapter_hidden_size)
    torch.testing.assert_close(model.adapter.item_embeddings(states), logits, rtol=0, atol=0)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 20, 64])
@pytest.mark.parametrize("k", [1, 5, 17])
def test_recommend_in_chunks_is_recommend(chunk_size, k, catalog):
    model = tiny_model()
    model.set_catalog(catalog)
    ids, segments = torch.cat([random_ids(), random_ids(seed=2)]), SEGMENTS.repeat(2, 1)
    exclusions = [[0, 1, 2], [19, -1, -1]]
    full = model.recommend(ids, item_segment_ids=segments, k=k, exclude_item_ids=exclusions)
    chunked = model.recommend(ids, item_segment_ids=segments, k=k, exclude_item_ids=exclusions, chunk_size=chunk_size)
    assert torch.equal(chunked.indices, full.indices) and chunked.item_ids == full.item_ids
    torch.testing.assert_close(chunked.scores, full.scores, rtol=0, atol=1e-6)
    if k == 17:
        with pytest.raises(ValueError, match="k=18 but user 0 has only 17 items left"):
            model.recommend(ids, item_segment_ids=segments, k=18, exclude_item_ids=exclusions, chunk_size=chunk_size)


def test_a_large_catalog_is_ranked_in_chunks_by_default(monkeypatch):
    model = tiny_model()
    calls = []
    topk = ranking.chunked_topk
    monkeypatch.setattr(ranking, "chunked_topk", lambda *args: calls.append(args[-1]) or topk(*args))
    expected = model.recommend(random_ids(), item_segment_ids=SEGMENTS, k=5)
    assert not calls
    monkeypatch.setattr(ranking, "CHUNKED_RANKING_THRESHOLD", 10)  # 20 items: a "large" catalog
    monkeypatch.setattr(ranking, "DEFAULT_CHUNK_SIZE", 6)
    chunked = model.recommend(random_ids(), item_segment_ids=SEGMENTS, k=5)
    assert calls == [6] and torch.equal(chunked.indices, expected.indices)
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
        model.recommend(random_ids(), item_segment_ids=SEGMENTS, k=5, chunk_size=-1)


def test_the_pipeline_ranks_a_large_catalog_in_chunks(monkeypatch, tmp_path, tokenizer, catalog):
    model = tiny_model(num_items=len(catalog))
    model.set_catalog(catalog)
    model.save_pretrained(tmp_path)
    IAMDataCollator(tokenizer, catalog, max_length=64, **collator_kwargs()).save_pretrained(tmp_path)
    recommender = pipeline("item-recommendation", model=str(tmp_path))
    history = {"history": ["i3", "i7", "i5"]}
    expected = [recommender(history, top_k=k) for k in (4, 20)] + [recommender(history, top_k=4, exclude_history=False)]

    monkeypatch.setattr(ranking, "CHUNKED_RANKING_THRESHOLD", 10)
    monkeypatch.setattr(ranking, "DEFAULT_CHUNK_SIZE", 6)
    outputs = recommender.forward(recommender.preprocess(history))
    assert "user_states" in outputs and "logits" not in outputs  # no [1 x num_items] scores
    chunked = [recommender(history, top_k=k) for k in (4, 20)] + [recommender(history, top_k=4, exclude_history=False)]
    for got, want in zip(chunked, expected):
        assert [row["index"] for row in got] == [row["index"] for row in want]
        torch.testing.assert_close(scores_of(got), scores_of(want))
    assert len(chunked[1]) == 17  # what is left after the history, never an excluded item
