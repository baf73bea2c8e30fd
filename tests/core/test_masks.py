"""`item_aware_mask` against a brute-force reading of the mask semantics, on random segment layouts."""

from __future__ import annotations

import random

import pytest
import torch

from transformers_iam.core.masks import ensure_no_empty_rows, item_aware_mask


def brute_force_allowed(segments: list[int], layer_type: str, q: int, k: int) -> bool:
    """The table of docs/architecture.md, one (query, key) pair at a time."""
    if k > q:
        return False
    if layer_type == "full":
        return True
    if layer_type == "intra":
        return segments[q] == segments[k]
    return segments[q] != segments[k] or q == k or segments[q] == 0


def random_layout(rng: random.Random) -> list[int]:
    """Context, then 0 to 6 items of 1 to 4 tokens, then context again; sometimes context between items."""
    segments = [0] * rng.randint(0, 3)
    for item in range(1, rng.randint(0, 6) + 1):
        segments += [item] * rng.randint(1, 4)
        if rng.random() < 0.2:
            segments += [0]
    return segments + [0] * rng.randint(1, 3)


@pytest.mark.parametrize("layer_type", ["intra", "inter", "full"])
def test_truth_table_matches_brute_force_on_random_layouts(layer_type):
    rng = random.Random(layer_type)
    for _ in range(50):
        rows = [random_layout(rng) for _ in range(3)]
        width = max(len(row) for row in rows)
        rows = [row + [0] * (width - len(row)) for row in rows]
        mask = item_aware_mask(torch.tensor(rows), layer_type)
        assert mask.shape == (3, 1, width, width)
        for b, segments in enumerate(rows):
            expected = [[brute_force_allowed(segments, layer_type, q, k) for k in range(width)] for q in range(width)]
            assert mask[b, 0].tolist() == expected, (layer_type, segments)


def test_decoding_step_rows_are_the_last_rows_of_the_full_mask():
    segments = torch.tensor([[0, 1, 1, 2, 2, 2, 0, 3, 3]])
    for layer_type in ("intra", "inter", "full"):
        full = item_aware_mask(segments, layer_type)
        torch.testing.assert_close(item_aware_mask(segments, layer_type, q_length=2), full[:, :, -2:])


def test_empty_rows_get_their_diagonal_and_nothing_else():
    mask = torch.tensor([[[[False, False, False], [True, True, False], [False, False, False]]]])
    fixed = ensure_no_empty_rows(mask)
    assert fixed[0, 0].tolist() == [[True, False, False], [True, True, False], [False, False, True]]


@pytest.mark.parametrize("bad, message", [("cross", "layer_type must be one of"), ("intra", "shape")])
def test_bad_arguments_are_named(bad, message):
    segments = torch.tensor([0, 1, 1]) if message == "shape" else torch.tensor([[0, 1, 1]])
    with pytest.raises(ValueError, match=message):
        item_aware_mask(segments, bad)
