"""Property-based checks of the metrics and the split: invariants no hand-written example covers."""

from __future__ import annotations

from collections import Counter

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from transformers_iam import ItemCatalog
from transformers_iam.recsys.data import Interaction
from transformers_iam.recsys.metrics import metrics_from_ranks, target_ranks
from transformers_iam.recsys.split import leave_one_out

# few distinct values, so ties are the common case
score_rows = st.integers(2, 8).flatmap(
    lambda items: st.lists(
        st.tuples(st.lists(st.integers(-2, 2), min_size=items, max_size=items), st.integers(0, items - 1)),
        min_size=1,
        max_size=4,
    )
)


@settings(max_examples=150, deadline=None)
@given(rows=score_rows, data=st.data())
def test_ranks_are_pessimistic_and_invariant_to_catalog_order(rows, data):
    scores = torch.tensor([row for row, _ in rows], dtype=torch.float32)
    targets = torch.tensor([target for _, target in rows])
    ranks = target_ranks(scores, targets)
    for (row, target), rank in zip(rows, ranks.tolist()):
        assert rank == sum(score >= row[target] for score in row)  # every tie counts against the target
    # renumbering the catalog (permuting its columns) changes no rank and no metric
    permutation = data.draw(st.permutations(range(scores.shape[1])))
    inverse = [permutation.index(index) for index in range(len(permutation))]
    permuted = target_ranks(scores[:, permutation], torch.tensor([inverse[t] for t in targets.tolist()]))
    assert permuted.tolist() == ranks.tolist()
    assert metrics_from_ranks(permuted) == metrics_from_ranks(ranks)


interaction_lists = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 5), st.integers(0, 4)), min_size=3, max_size=40
)  # (user, item, timestamp): small ranges, so repeats and timestamp ties are common


@settings(max_examples=150, deadline=None)
@given(rows=interaction_lists)
def test_split_uses_each_interaction_once_and_leaks_no_target(rows):
    catalog = ItemCatalog([str(item) for item in range(6)], [f"item {item}" for item in range(6)])
    interactions = [Interaction(f"u{u}", str(i), float(t), f"row {n}") for n, (u, i, t) in enumerate(rows)]
    if max(Counter(u for u, _, _ in rows).values()) < 3:
        return  # nobody has the 3 interactions a split needs: an error, tested elsewhere
    data = leave_one_out(interactions, catalog, max_history=None)
    for user, sequence in data.sequences.items():
        # the sequence is the user's interactions sorted by time, ties in file order
        mine = [(t, n, str(i)) for n, (u, i, t) in enumerate(rows) if f"u{u}" == user]
        assert sequence == [item for _, _, item in sorted(mine)]
        # every interaction but the first is the target of exactly one example, in exactly one split
        targets = [row["target"] for row in data.train if row["user_id"] == user]
        targets += [row["target"] for split in (data.valid, data.test) for row in split if row["user_id"] == user]
        assert Counter(targets) == Counter(sequence[1:])
    for split in (data.train, data.valid, data.test):
        for row in split:
            # a target is in its own history only when the user really interacted with that item twice
            if row["target"] in row["history"]:
                assert data.sequences[row["user_id"]].count(row["target"]) >= 2
