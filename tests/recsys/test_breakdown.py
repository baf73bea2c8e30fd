"""Long-tail and cold-target breakdowns: the groups, each group's metrics and paired comparisons, and their tables."""

from __future__ import annotations

import numpy as np
import pytest

from transformers_iam.recsys.breakdown import (
    cold_breakdown,
    compare_groups,
    format_group_table,
    format_rank_distribution,
    long_tail_breakdown,
    popularity_groups,
)
from transformers_iam.recsys.metrics import metrics_from_ranks
from transformers_iam.recsys.paired import paired_comparison


def test_head_torso_tail_cut_by_share_of_training_interactions_with_ties_kept_together():
    # 100 interactions: a 30, b 15, c 15, d 10, e 10, f 10, g 5, h 5; i none
    counts = {"a": 30, "b": 15, "c": 15, "d": 10, "e": 10, "f": 10, "g": 5, "h": 5}
    groups = popularity_groups(counts, list("abcdefghi"))
    # a + b + c = 60: b and c tie at the 50% cut (30 before them), so both are head; d, e, f start at 60 < 80: torso
    # (f ends at 90, past 80: a cut inside a tie keeps the tie whole); g, h start at 90: tail
    assert groups == dict(a="head", b="head", c="head", d="torso", e="torso", f="torso", g="tail", h="tail", i="unseen")
    # the head holds at least its share: the item that crosses the cut is in it
    assert popularity_groups({"a": 49, "b": 2, "c": 49}, "abc") == {"a": "head", "c": "head", "b": "tail"}
    with pytest.raises(ValueError, match="head_share < torso_share"):
        popularity_groups(counts, "ab", head_share=0.8, torso_share=0.5)


def test_compare_groups_is_metrics_and_paired_comparison_on_each_groups_users():
    rng = np.random.default_rng(0)
    users = [f"u{i}" for i in range(60)]
    ranks = {
        "model": {user: int(rank) for user, rank in zip(users, rng.integers(1, 40, 60))},
        "popularity": {user: int(rank) for user, rank in zip(users, rng.integers(1, 40, 60))},
        "SASRec": {user: int(rank) for user, rank in zip(users, rng.integers(1, 40, 60))} | {"extra": 1},
    }
    groups = {user: ("head", "tail")[i % 3 == 0] for i, user in enumerate(users)}
    result = compare_groups(ranks, groups, ("head", "torso", "tail"), resamples=500, seed=1)
    assert result["torso"] == {"users": 0}
    for group in ("head", "tail"):
        members = [user for user in users if groups[user] == group]
        assert result[group]["users"] == len(members)
        for name in ranks:
            expected = metrics_from_ranks([ranks[name][user] for user in members], ks=(10, 50, 100))
            got = result[group]["metrics"][name]
            assert got["ndcg@10"] == pytest.approx(expected["ndcg@10"]) and got["hr@50"] == expected["hr@50"]
            assert got["median_rank"] == np.median([ranks[name][user] for user in members])
        assert set(result[group]["paired"]) == {"model", "SASRec"}  # the reference is not paired with itself
        paired = paired_comparison(
            {user: ranks["model"][user] for user in members},
            {user: ranks["popularity"][user] for user in members},
            "hr@10",
            resamples=500,
            seed=1,
        )
        assert result[group]["paired"]["model"]["hr@10"] == paired.to_dict()
    with pytest.raises(ValueError, match=r"model has no rank for 1 of the 61 users, e.g. \[.nobody.\]"):
        compare_groups(ranks, {**groups, "nobody": "head"}, ("head", "tail"))
    with pytest.raises(ValueError, match=r"groups \['middle'\] are not among"):
        compare_groups(ranks, {"u1": "middle"}, ("head", "tail"))


def test_long_tail_breakdown_groups_users_by_their_targets_count():
    counts = {"a": 6, "b": 3, "c": 1}
    targets = {"u1": "a", "u2": "b", "u3": "c", "u4": "d", "u5": "a"}
    ranks = {"model": {"u1": 1, "u2": 2, "u3": 3, "u4": 500, "u5": 11}, "popularity": {u: 5 for u in targets}}
    result = long_tail_breakdown(ranks, targets, counts, "abcd", resamples=100)
    assert result["items"] == {"head": 1, "torso": 1, "tail": 1, "unseen": 1}
    assert result["training_interactions"] == {"head": 6, "torso": 3, "tail": 1, "unseen": 0}
    assert {group: entry["users"] for group, entry in result["groups"].items()} == dict(
        head=2, torso=1, tail=1, unseen=1
    )
    assert result["groups"]["head"]["metrics"]["model"]["hr@10"] == 0.5
    assert result["groups"]["unseen"]["metrics"]["model"]["median_rank"] == 500
    assert "first 50% of training interactions" in result["definition"]
    with pytest.raises(ValueError, match="no target for 1 ranked users"):
        long_tail_breakdown({"popularity": {"u9": 1}}, targets, counts, "abcd")


def test_cold_breakdown_separates_cold_targets_and_reports_where_they_land():
    targets = {f"c{i}": "x" for i in range(4)} | {f"w{i}": "y" for i in range(4)}
    ranks = {
        "model": {"c0": 30, "c1": 60, "c2": 90, "c3": 700, "w0": 1, "w1": 2, "w2": 3, "w3": 4},
        "popularity": {"c0": 999, "c1": 999, "c2": 999, "c3": 999, "w0": 2, "w1": 2, "w2": 2, "w3": 2},
    }
    result = cold_breakdown(ranks, targets, {"x"}, catalog_size=1000, resamples=200)
    cold, warm = result["groups"]["cold"], result["groups"]["warm"]
    assert (cold["users"], warm["users"], result["items"]) == (4, 4, {"cold": 1, "warm": 999})
    # NDCG@10 is 0 for both on cold targets; the rank distribution still tells them apart
    assert cold["metrics"]["model"]["ndcg@10"] == cold["metrics"]["popularity"]["ndcg@10"] == 0
    assert cold["metrics"]["model"]["median_rank"] == 75 and cold["metrics"]["model"]["hr@50"] == 0.25
    assert cold["metrics"]["model"]["hr@100"] == 0.75 and cold["metrics"]["popularity"]["hr@100"] == 0
    assert cold["paired"]["model"]["ndcg@10"]["difference"] == 0
    assert warm["paired"]["model"]["hr@10"]["difference"] == 0 and warm["paired"]["model"]["ndcg@10"]["wins"] == 1
    table = format_group_table(result, {"model": "IAM"}, "ndcg@10").splitlines()
    assert table[0] == (
        "| target group | catalog items | users | IAM NDCG@10 | popularity NDCG@10 | IAM - popularity NDCG@10 "
        "[95% interval] |"
    )
    assert table[2].startswith("| cold | 1 | 4 | 0.0000 | 0.0000 | +0.0000 [")
    distribution = format_rank_distribution(result, "cold", {"model": "IAM"}).splitlines()
    assert distribution[2] == "| IAM | 4 | 75 | 0.0000 | 0.2500 | 0.7500 | 0.0000 |"
    assert distribution[3] == "| popularity | 4 | 999 | 0.0000 | 0.0000 | 0.0000 | 0.0000 |"
