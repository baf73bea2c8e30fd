"""The paired comparison's statistics on cases checkable by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from transformers_iam.recsys.metrics import metrics_from_ranks
from transformers_iam.recsys.paired import (
    comparison_sentence,
    format_paired_table,
    paired_comparison,
    per_user_values,
    sign_test,
)


def test_identical_runs_differ_by_nothing():
    ranks = {f"u{i}": rank for i, rank in enumerate([1, 2, 5, 11, 40, 3])}
    result = paired_comparison(ranks, dict(ranks))
    assert result.difference == 0 and result.interval == (0.0, 0.0) and result.p_value == 1.0
    assert result.relative == 0 and result.relative_interval == (0.0, 0.0)
    assert (result.wins, result.losses, result.ties) == (0, 0, 6) and result.resamples == 10_000


def test_a_run_that_wins_on_every_user():
    better = {f"u{i}": 1 for i in range(30)}
    worse = {f"u{i}": 3 for i in range(30)}  # NDCG@10 1 vs 0.5 for every user
    result = paired_comparison(better, worse)
    assert result.p_value == 2 * 0.5**30 and (result.wins, result.losses) == (30, 0)
    assert result.difference == pytest.approx(0.5) and result.interval == pytest.approx((0.5, 0.5))
    assert result.relative == pytest.approx(1.0)
    assert paired_comparison(worse, better).difference == pytest.approx(-0.5)


def test_sign_test_is_the_exact_binomial():
    assert sign_test(0, 0) == 1.0 and sign_test(3, 3) == 1.0
    assert sign_test(5, 1) == pytest.approx(2 * (1 + 6) / 64)  # P(X <= 1) for X ~ Bin(6, 1/2), both tails
    assert sign_test(1, 5) == sign_test(5, 1)


def test_users_outside_the_top_10_on_both_sides_are_ties_and_the_means_are_the_metrics():
    a = {"u1": 1, "u2": 50, "u3": 2, "u4": 12}
    b = {"u1": 4, "u2": 60, "u3": 2, "u4": 1}
    result = paired_comparison(a, b, "hr@10")
    assert (result.wins, result.losses, result.ties) == (0, 1, 3)
    ndcg = paired_comparison(a, b)
    assert ndcg.mean_a == pytest.approx(metrics_from_ranks(list(a.values()))["ndcg@10"])
    assert ndcg.mean_b == pytest.approx(metrics_from_ranks(list(b.values()))["ndcg@10"])
    assert ndcg.interval[0] <= ndcg.difference <= ndcg.interval[1]
    assert per_user_values(np.array([1, 10, 11]), "mrr@10").tolist() == [1.0, 0.1, 0.0]


def test_the_bootstrap_is_seeded():
    rng = np.random.default_rng(1)
    a = {f"u{i}": int(r) for i, r in enumerate(rng.integers(1, 30, 100))}
    b = {f"u{i}": int(r) for i, r in enumerate(rng.integers(1, 30, 100))}
    assert paired_comparison(a, b, seed=3).interval == paired_comparison(a, b, seed=3).interval
    assert paired_comparison(a, b, seed=3).interval != paired_comparison(a, b, seed=4).interval


def test_different_users_are_refused_and_a_zero_baseline_has_no_relative_difference():
    with pytest.raises(ValueError, match="needs the same users: 1 only in A"):
        paired_comparison({"u1": 1, "u2": 2}, {"u1": 1, "u3": 2})
    result = paired_comparison({"u1": 1}, {"u1": 50})
    assert math.isnan(result.relative) and math.isnan(result.relative_interval[0])
    table = format_paired_table({"A vs B, NDCG@10": result})
    assert "paired bootstrap over users (10,000 resamples, seed 0)" in table and "| nan |" in table
    sentence = comparison_sentence(paired_comparison({"u1": 1, "u2": 3}, {"u1": 3, "u2": 3}), "IAM", "pop", "test")
    assert sentence.startswith("IAM is +50.0% NDCG@10 over pop on test (0.7500 vs 0.5000, 2 users), 95% paired")


def test_a_zero_baseline_is_compared_by_the_absolute_difference_and_says_why_not_relative():
    # popularity scoring 0 (a 20-user smoke run): the report used to say "IAM is nan NDCG@10 over popularity"
    result = paired_comparison({"u1": 1, "u2": 3, "u3": 40}, {"u1": 50, "u2": 50, "u3": 50})
    sentence = comparison_sentence(result, "IAM", "popularity", "test")
    assert sentence.startswith(
        "IAM is +0.5000 NDCG@10 over popularity on test (0.5000 vs 0.0000, 3 users), 95% paired bootstrap interval of "
        f"the absolute difference [{result.interval[0]:+.4f}, {result.interval[1]:+.4f}]; no relative difference: it "
        "would divide by popularity's NDCG@10, 0 on these users; IAM better for 2 users, worse for 0"
    )
    assert "nan" not in sentence and result.interval[0] < result.difference < result.interval[1]

    # B above 0, but 0 in some resamples: the relative difference stands, its interval does not
    result = paired_comparison({"u1": 1, "u2": 1}, {"u1": 50, "u2": 1})
    assert result.relative == pytest.approx(1.0) and math.isnan(result.relative_interval[0])
    sentence = comparison_sentence(result, "IAM", "popularity", "valid")
    assert sentence.startswith(
        "IAM is +100.0% NDCG@10 over popularity on valid (1.0000 vs 0.5000, 2 users), absolute difference +0.5000 "
        "with 95% paired bootstrap interval [+0.0000, +1.0000]; no interval of the relative difference: it would "
        "divide by popularity's NDCG@10, 0 in some resamples of these users"
    )
    assert "nan" not in sentence


def test_seeds_of_one_configuration_are_averaged_per_user_before_pairing():
    seed0 = {"u1": 1, "u2": 11, "u3": 3}  # NDCG@10 1, 0, 0.5
    seed1 = {"u1": 11, "u2": 1, "u3": 3}  # 0, 1, 0.5: every user's mean is 0.5
    baseline = {"u1": 3, "u2": 3, "u3": 3}  # 0.5 each
    pooled = paired_comparison([seed0, seed1], baseline)
    assert pooled.mean_a == pytest.approx(0.5) and pooled.difference == pytest.approx(0.0)
    # averaged per user, not pooled as more users: no user differs, so no spread and no sign-test evidence
    assert pooled.interval == pytest.approx((0.0, 0.0)) and (pooled.wins, pooled.losses, pooled.ties) == (0, 0, 3)
    assert paired_comparison([seed0, seed0], baseline) == paired_comparison(seed0, baseline)
    with pytest.raises(ValueError, match="run 2 of A holds other users"):
        paired_comparison([seed0, {"u1": 1, "u2": 1}], baseline)
