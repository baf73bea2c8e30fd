"""The cold-item protocol's data side: which items are cold, what training loses, what validation and test keep,
the warm views a model trains and is selected on, and popularity with cold items at 0."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from transformers_iam import ItemCatalog
from transformers_iam.recsys import baselines
from transformers_iam.recsys.baselines import evaluate_popularity, popularity_ranks, popularity_scores
from transformers_iam.recsys.data import Interaction
from transformers_iam.recsys.readers import load_recbole_atomic, movielens_100k_directory
from transformers_iam.recsys.split import choose_cold_items, leave_one_out


@pytest.fixture(scope="module")
def interactions():
    """ml-100k's interactions, read once (the split is made from them with different settings below)."""
    data = load_recbole_atomic(movielens_100k_directory(), max_history=10, train_examples_per_user=1)
    # the sequences are time-ordered with ties in file order: rebuilt with strictly increasing times, they split alike
    rows = [
        Interaction(user, item, float(t), f"{user}:{t}")
        for user, items in data.sequences.items()
        for t, item in enumerate(items)
    ]
    return rows, data.catalog


@pytest.fixture(scope="module")
def plain_and_cold(interactions):
    rows, catalog = interactions
    kwargs = dict(max_history=10, train_windows=True, seed=7)
    return leave_one_out(rows, catalog, **kwargs), leave_one_out(rows, catalog, cold_items=0.2, **kwargs)


def test_valid_and_test_rows_are_those_of_the_plain_split(plain_and_cold):
    plain, cold = plain_and_cold
    for split in ("valid", "test"):
        assert cold.split(split).to_list() == plain.split(split).to_list()
    assert cold.sequences == plain.sequences
    keys = ("users", "items", "items_with_interactions", "interactions", "timestamp_ties", "duplicate_interactions")
    assert all(cold.statistics[key] == plain.statistics[key] for key in keys)
    assert plain.cold_items == () and plain.statistics["cold_items"] is None and plain.warm_valid is plain.valid


def test_cold_items_are_a_seeded_share_and_never_reach_training(plain_and_cold, interactions):
    plain, cold = plain_and_cold
    cold_set = set(cold.cold_items)
    assert len(cold_set) == round(0.2 * 1682) == cold.statistics["cold_items"]["items"]
    assert list(cold.cold_items) == [item for item in cold.catalog.item_ids if item in cold_set]  # catalog order
    for row in cold.train:
        assert row["target"] not in cold_set and not cold_set.intersection(row["history"])
    # training targets: every item of each user's cold-free training sequence but its first, once (windows)
    expected = Counter()
    for user, items in cold.visible_sequences("train").items():
        assert items == [item for item in plain.sequences[user][:-2] if item not in cold_set]
        expected.update(items[1:])
    got = Counter(item for row in cold.train for item in [*row["history"][1:], row["target"]])
    assert got == expected
    removed = sum(len(items) - 2 for items in plain.sequences.values()) - sum(
        len(items) for items in cold.visible_sequences("train").values()
    )
    assert removed == cold.statistics["cold_items"]["training_interactions_removed"] > 0
    # the draw: the same for the same seed whatever the file order, another for another seed
    rows, catalog = interactions
    shuffled = list(rows)
    random.Random(0).shuffle(shuffled)  # times are distinct: the sequences do not change
    assert leave_one_out(shuffled, catalog, cold_items=0.2, seed=7, max_history=10).cold_items == cold.cold_items
    assert choose_cold_items(cold.sequences, catalog, 0.2, seed=8) != cold.cold_items


def test_warm_views_for_training_and_selection(plain_and_cold):
    plain, cold = plain_and_cold
    cold_set = set(cold.cold_items)
    stats = cold.statistics["cold_items"]
    assert cold.warm_catalog.item_ids == [item for item in cold.catalog.item_ids if item not in cold_set]
    assert cold.warm_catalog.texts == [cold.catalog.text_of(item) for item in cold.warm_catalog.item_ids]
    warm = cold.warm_valid.to_list()
    assert len(warm) == stats["warm_valid_users"] == 943 - stats["valid_users_with_cold_target"]
    assert stats["valid_users_with_cold_target"] == sum(row["target"] in cold_set for row in cold.valid)
    assert stats["test_users_with_cold_target"] == sum(row["target"] in cold_set for row in cold.test)
    full = {row["user_id"]: row for row in cold.valid}
    for row in warm:
        assert row["target"] == full[row["user_id"]]["target"] and row["target"] not in cold_set
        assert row["history"] == [item for item in full[row["user_id"]]["history"] if item not in cold_set]
    counts = cold.training_counts()
    assert all(counts[item] == 0 for item in cold_set) and sum(counts.values()) == sum(
        len(items) for items in cold.visible_sequences("train").values()
    )
    assert "validation during training on" in cold.describe() and "test users have a cold target" in cold.describe()


def test_a_user_whose_training_part_is_all_cold_leaves_the_warm_validation_view_and_is_counted():
    catalog = ItemCatalog(list("abcdef"), list("ABCDEF"))
    rows = [Interaction("u", item, t, f"row {t}") for t, item in enumerate("bbea")]  # training part b, b
    rows += [Interaction("v", item, t, f"row {t}") for t, item in enumerate("acdcf")]
    seed = next(
        seed
        for seed in range(100)
        if choose_cold_items({"u": list("bbea"), "v": list("acdcf")}, catalog, 0.2, seed) == ("b",)
    )
    data = leave_one_out(rows, catalog, cold_items=0.2, seed=seed)
    stats = data.statistics["cold_items"]
    assert (stats["valid_users_with_only_cold_history"], stats["valid_users_with_cold_target"]) == (1, 0)
    assert data.warm_valid.to_list() == [{"user_id": "v", "history": ["a", "c", "d"], "target": "c"}]
    assert data.valid.to_list()[0] == {"user_id": "u", "history": ["b", "b"], "target": "e"}  # unchanged
    assert [row["user_id"] for row in data.train] == ["v", "v"]  # u has nothing left to train on


def test_popularity_counts_only_what_the_models_trained_on_under_cold_items(plain_and_cold):
    plain, cold = plain_and_cold
    cold_set = set(cold.cold_items)
    for split in ("valid", "test"):
        scores = popularity_scores(cold.popularity_sequences(split), cold.catalog)
        counts = cold.training_counts()
        assert scores.tolist() == [float(counts[item]) for item in cold.catalog.item_ids]  # test: no validation items
        ranks = popularity_ranks(cold, split, exclude_history=True)
        dataset = cold.split(split)
        for row, rank in zip(dataset, ranks.tolist()):
            if row["target"] in cold_set:  # a 0 count ties with every unexcluded item scoring 0 or more: all of them
                assert rank == len(cold.catalog) - len(set(row["history"]) - {row["target"]})
    # the plain split's test popularity still counts the validation items
    plain_test = popularity_scores(plain.popularity_sequences("test"), plain.catalog)
    assert plain_test.sum() == sum(len(items) - 1 for items in plain.sequences.values())
    # the validation view during training: popularity on its users excludes the histories those rows have
    metrics = evaluate_popularity(cold, "valid", True, dataset=cold.warm_valid)
    assert metrics["users"] == len(cold.warm_valid) and metrics["ndcg@10"] > 0
    assert torch.equal(popularity_ranks(plain, "test", True), popularity_ranks(plain, "test", True, dataset=plain.test))


def test_popularity_ranks_a_chunk_of_users_at_a_time(plain_and_cold, monkeypatch):
    # no [users x items] matrix: a million items would make 500 users 2 GB of scores and as much for the exclusions
    plain, _ = plain_and_cold
    whole = popularity_ranks(plain, "test", exclude_history=True)
    monkeypatch.setattr(baselines, "POPULARITY_RANKING_SCORES", 7 * len(plain.catalog))  # 7 users a chunk
    assert torch.equal(popularity_ranks(plain, "test", exclude_history=True), whole)
    assert popularity_ranks(plain, "test", True, dataset=plain.test.select([])).shape == (0,)  # no users, no ranks


@pytest.mark.parametrize(
    "share, message",
    [(0.0, r"a share in \(0, 1\)"), (1.0, r"a share in \(0, 1\)"), (True, "a share"), (0.01, "makes 0 cold items")],
)
def test_bad_shares_are_named(share, message):
    catalog = ItemCatalog(list("abcd"), list("ABCD"))
    rows = [Interaction("u", item, t, f"row {t}") for t, item in enumerate("abcd")]
    with pytest.raises(ValueError, match=message):
        leave_one_out(rows, catalog, cold_items=share)


def test_new_arrivals_are_the_items_whose_text_matches_and_never_reach_training(interactions):
    rows, catalog = interactions
    pattern = r"\(1998\) \|"  # ml-100k's newest releases
    data = leave_one_out(rows, catalog, cold_item_pattern=pattern, max_history=10, train_windows=True)
    present = {item for items in data.sequences.values() for item in items}
    expected = [item for item, text in zip(catalog.item_ids, catalog.texts) if "(1998) |" in text and item in present]
    assert list(data.cold_items) == expected and len(expected) > 10
    stats = data.statistics["cold_items"]
    assert stats["pattern"] == pattern and stats["items"] == len(expected) and stats["share"] is None
    cold_set = set(expected)
    for row in data.train:
        assert row["target"] not in cold_set and not cold_set.intersection(row["history"])
    assert stats["test_users_with_cold_target"] == sum(row["target"] in cold_set for row in data.test)
    assert f"cold items: {len(expected)} (the items whose text matches {pattern!r})" in data.describe()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(cold_item_pattern="(1998"), "is not a regular expression"),
        (dict(cold_item_pattern=r"\(2077\)"), "matches the texts of 0 of the 1682 items"),
        (dict(cold_item_pattern="."), "matches the texts of 1682 of the 1682 items"),
        (dict(cold_item_pattern=r"\(1998\)", cold_items=0.2), "choose one"),
    ],
)
def test_a_pattern_that_cannot_make_new_arrivals_is_refused(interactions, kwargs, message):
    rows, catalog = interactions
    with pytest.raises(ValueError, match=message):
        leave_one_out(rows, catalog, max_history=10, **kwargs)
