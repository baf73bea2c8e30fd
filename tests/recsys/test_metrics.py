"""Ranks and metrics against hand-computed values, ties included."""

from __future__ import annotations

import math

import pytest
import torch

from transformers_iam.recsys.metrics import format_metrics_table, metrics_from_ranks, target_ranks


def test_pessimistic_rank_counts_ties_against_the_target():
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.5, 0.5, 0.2],  # target 2 ties with item 3, below item 0 -> rank 3
            [0.3, 0.3, 0.3, 0.3, 0.3],  # all tied -> rank 5 (the worst)
            [0.0, 1.0, -1.0, 0.5, 0.2],  # target 1 is the best -> rank 1
        ]
    )
    assert target_ranks(scores, torch.tensor([2, 4, 1])).tolist() == [3, 5, 1]


def test_history_exclusion_removes_items_but_never_the_target():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.5, 0.2]])
    assert target_ranks(scores, torch.tensor([2]), [[0]]).tolist() == [2]
    assert target_ranks(scores, torch.tensor([2]), [[0, 3]]).tolist() == [1]
    assert target_ranks(scores, torch.tensor([2]), torch.tensor([[0, 3, -1]])).tolist() == [1]
    # the target in its own history is still ranked
    assert target_ranks(scores, torch.tensor([2]), [[2, 0]]).tolist() == [2]


def test_nan_target_score_is_an_error():
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(torch.tensor([[float("nan"), 1.0]]), torch.tensor([0]))


def test_metrics_by_hand():
    metrics = metrics_from_ranks([1, 2, 6, 30], ks=[5, 10])
    assert metrics["hr@5"] == pytest.approx(2 / 4)
    assert metrics["hr@10"] == pytest.approx(3 / 4)
    assert metrics["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert metrics["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(7)) / 4)
    assert metrics["mrr@5"] == pytest.approx((1 + 1 / 2) / 4)
    assert metrics["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 6) / 4)
    assert metrics["users"] == 4


def test_metrics_reject_bad_ranks():
    with pytest.raises(ValueError, match="1-based"):
        metrics_from_ranks([0, 1])
    with pytest.raises(ValueError, match="no ranks"):
        metrics_from_ranks([])


def test_table_has_one_row_per_model():
    table = format_metrics_table({"a": metrics_from_ranks([1]), "b": metrics_from_ranks([50])})
    assert table.count("\n") == 3 and "| a | 1 | 1.0000" in table and "| b | 1 | 0.0000" in table
