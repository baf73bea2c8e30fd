"""`item_aware_mask` against a brute-force reading of the mask semantics, on random segment layouts."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

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


# -- property-based: the masks the attention really uses, padding included ---------------------

segment_rows = st.lists(
    st.tuples(st.integers(0, 4), st.integers(1, 3)), min_size=1, max_size=6
)  # (segment id, run length) runs: items may repeat an id out of order, context may sit anywhere


@st.composite
def padded_batches(draw):
    rows = []
    for _ in range(draw(st.integers(1, 3))):
        segments = [segment for segment, length in draw(segment_rows) for _ in range(length)]
        rows.append(segments)
    width = max(len(row) for row in rows) + draw(st.integers(0, 3))
    left = draw(st.booleans())
    padded, real = [], []
    for row in rows:
        pad = width - len(row)
        padded.append([0] * pad + row if left else row + [0] * pad)
        real.append([False] * pad + [True] * len(row) if left else [True] * len(row) + [False] * pad)
    return padded, real


@settings(max_examples=150, deadline=None)
@given(batch=padded_batches(), layer_type=st.sampled_from(["intra", "inter"]))
def test_masks_with_padding_match_brute_force(batch, layer_type):
    from transformers_iam.core.attention import ItemSegments

    rows, real = batch
    width = len(rows[0])
    padding = torch.tensor(real)
    base = padding[:, None, None, :] & torch.ones(width, width, dtype=torch.bool).tril()  # the backbone's own mask
    mask = ItemSegments(torch.tensor(rows)).mask_for(layer_type, base, width, width, None)
    for b, segments in enumerate(rows):
        for q in range(width):
            expected = [brute_force_allowed(segments, layer_type, q, k) and real[b][k] for k in range(width)]
            if not any(expected):  # only a padding query can see nothing: it gets its diagonal
                assert not real[b][q], (segments, real[b], q)  # a real token always sees itself
                expected = [k == q for k in range(width)]
            assert mask[b, 0, q].tolist() == expected, (layer_type, segments, real[b], q)
