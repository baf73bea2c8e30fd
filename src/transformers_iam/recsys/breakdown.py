"""Where one evaluation becomes several: users grouped by their target item (the long tail, cold items), each
group's metrics for every ranker, and each ranker paired against a reference (popularity) within the group.

**Long tail** (docs/architecture.md, "Cold items and the long tail"): the items are ordered by how often they occur
in the training sequences (``LeaveOneOutData.training_counts``), most first. *head*: the items that together make up
the first 50% of training interactions; *torso*: the next ones, up to 80%; *tail*: the other items with at least one
training interaction; *unseen*: none (cold items, and items that are only ever a validation or test target). The
cuts are made by count, not by position: items tied on count with the item that crosses a cut are in its group, so
the head may hold a little more than 50%. A user belongs to the group of its target.

**Cold items**: users whose target is cold against the others. At chance every ranker's NDCG@10 on cold targets is
about 0, which says nothing; the rank distribution (median rank, HR@50, HR@100) is reported beside it.

Example:
    >>> ranks = {"model": {"u1": 1, "u2": 30, "u3": 4}, "popularity": {"u1": 2, "u2": 90, "u3": 4}}
    >>> targets = {"u1": "a", "u2": "c", "u3": "b"}
    >>> result = long_tail_breakdown(ranks, targets, {"a": 6, "b": 3, "c": 1}, ["a", "b", "c", "d"], resamples=100)
    >>> {group: entry["users"] for group, entry in result["groups"].items()}
    {'head': 1, 'torso': 1, 'tail': 1, 'unseen': 0}
    >>> result["groups"]["tail"]["metrics"]["model"]["median_rank"]
    30.0
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np

from .metrics import metrics_from_ranks
from .paired import paired_comparison

TAIL_GROUPS = ("head", "torso", "tail", "unseen")
COLD_GROUPS = ("cold", "warm")
HEAD_SHARE = 0.5  # of training interactions: the head ends where the first half of them does
TORSO_SHARE = 0.8  # the torso ends at 80%; the tail is the last 20%
GROUP_METRICS = ("ndcg@10", "hr@10", "hr@50", "hr@100")  # HR@50/100: where a near-chance ranker still differs
PAIRED_METRICS = ("ndcg@10", "hr@10")
LONG_TAIL_DEFINITION = (
    "users grouped by how often their target occurs in the training sequences: head = the most-interacted items "
    "making up the first {head:.0%} of training interactions, torso = the next ones up to {torso:.0%}, tail = the "
    "rest with at least one, unseen = none (items tied on count at a cut share a group)"
)
COLD_DEFINITION = (
    "users whose target is a cold item (no interaction with it in training: a seeded share of the items) against "
    "the others; popularity counts only what the models trained on, so every cold item counts 0"
)


def popularity_groups(
    counts: Mapping[str, int],
    item_ids: Iterable[str],
    head_share: float = HEAD_SHARE,
    torso_share: float = TORSO_SHARE,
) -> dict[str, str]:
    """Each item's long-tail group (``head``, ``torso``, ``tail`` or ``unseen``) from its training count.

    An item is in the head when the items strictly more frequent than it hold less than ``head_share`` of the
    interactions, in the torso when they hold less than ``torso_share``; counts missing from ``counts`` are 0.

    Example:
        >>> popularity_groups({"a": 5, "b": 3, "c": 1, "d": 1}, ["a", "b", "c", "d", "e"])
        {'a': 'head', 'b': 'torso', 'c': 'tail', 'd': 'tail', 'e': 'unseen'}
    """
    if not 0 < head_share < torso_share < 1:
        raise ValueError(f"need 0 < head_share < torso_share < 1, got {head_share} and {torso_share}")
    item_ids = list(item_ids)
    item_counts = {item_id: int(counts.get(item_id, 0)) for item_id in item_ids}
    total = sum(item_counts.values())
    # interactions of the items strictly more frequent than each count: every item of one count gets the same value
    above, running = {}, 0
    for count in sorted(set(item_counts.values()), reverse=True):
        above[count] = running
        running += count * sum(1 for value in item_counts.values() if value == count)
    groups = {}
    for item_id, count in item_counts.items():
        if count == 0:
            groups[item_id] = "unseen"
        elif above[count] < head_share * total:
            groups[item_id] = "head"
        elif above[count] < torso_share * total:
            groups[item_id] = "torso"
        else:
            groups[item_id] = "tail"
    return groups


def rank_summary(ranks: Sequence[int]) -> dict[str, float]:
    """NDCG@10, HR@10, HR@50, HR@100 and the median rank of 1-based ranks.

    Example:
        >>> rank_summary([1, 20, 70, 500])["hr@50"], rank_summary([1, 20, 70, 500])["median_rank"]
        (0.5, 45.0)
    """
    metrics = metrics_from_ranks(ranks, ks=(10, 50, 100))
    summary = {name: metrics[name] for name in GROUP_METRICS}
    summary["median_rank"] = float(np.median(np.asarray(ranks, dtype=np.float64)))
    return summary


def compare_groups(
    ranks: Mapping[str, Mapping[str, int]],
    groups: Mapping[str, str],
    group_names: Sequence[str],
    reference: str = "popularity",
    resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, dict]:
    """Each group's users (their count and ids), every ranker's :func:`rank_summary` on them, and every other ranker
    paired against ``reference`` on them (:func:`~transformers_iam.recsys.paired.paired_comparison`, NDCG@10 and HR@10).

    ``ranks`` is ``{ranker: {user_id: rank}}`` and must rank every user of ``groups`` (``{user_id: group}``); a
    ranker's other users are ignored. A group without users has ``{"users": 0}`` only.

    Example:
        >>> ranks = {"model": {"u1": 1, "u2": 8}, "popularity": {"u1": 3, "u2": 8}}
        >>> result = compare_groups(ranks, {"u1": "cold", "u2": "warm"}, ("cold", "warm"), resamples=10)
        >>> result["cold"]["metrics"]["model"]["ndcg@10"], result["cold"]["paired"]["model"]["ndcg@10"]["difference"]
        (1.0, 0.5)
    """
    if reference not in ranks:
        raise ValueError(f"the reference ranker {reference!r} has no ranks (rankers: {sorted(ranks)})")
    unknown = set(groups.values()) - set(group_names)
    if unknown:
        raise ValueError(f"groups {sorted(unknown)} are not among {list(group_names)}")
    for name, ranker_ranks in ranks.items():
        missing = [user for user in groups if user not in ranker_ranks]
        if missing:
            raise ValueError(f"{name} has no rank for {len(missing)} of the {len(groups)} users, e.g. {missing[:3]}")
    result = {}
    for group in group_names:
        users = [user for user, user_group in groups.items() if user_group == group]
        if not users:
            result[group] = {"users": 0}
            continue
        chosen = {name: {user: int(ranker_ranks[user]) for user in users} for name, ranker_ranks in ranks.items()}
        result[group] = {
            "users": len(users),
            "user_ids": users,  # for pairing other rankers on the same group later (benchmarks/record_results.py)
            "metrics": {name: rank_summary(list(user_ranks.values())) for name, user_ranks in chosen.items()},
            "paired": {
                name: {
                    metric: paired_comparison(user_ranks, chosen[reference], metric, resamples, seed).to_dict()
                    for metric in PAIRED_METRICS
                }
                for name, user_ranks in chosen.items()
                if name != reference
            },
        }
    return result


def long_tail_breakdown(
    ranks: Mapping[str, Mapping[str, int]],
    targets: Mapping[str, str],
    counts: Mapping[str, int],
    item_ids: Iterable[str],
    reference: str = "popularity",
    resamples: int = 10_000,
    seed: int = 0,
) -> dict:
    """The users ranked by ``reference``, grouped by their target's long-tail group (:func:`popularity_groups` of
    the training ``counts`` over the catalog's ``item_ids``), compared with :func:`compare_groups`.

    Returns ``{"definition", "reference", "items": {group: catalog items}, "training_interactions": {group: count},
    "groups": {group: ...}}`` (the module's example shows a call).
    """
    item_group = popularity_groups(counts, item_ids)
    users = _users(ranks, reference, targets)
    items = {group: 0 for group in TAIL_GROUPS}
    interactions = {group: 0 for group in TAIL_GROUPS}
    for item_id, group in item_group.items():
        items[group] += 1
        interactions[group] += int(counts.get(item_id, 0))
    unknown = sorted({targets[user] for user in users} - set(item_group))
    if unknown:
        raise ValueError(f"targets {unknown[:3]} are not among the catalog's items")
    return {
        "definition": LONG_TAIL_DEFINITION.format(head=HEAD_SHARE, torso=TORSO_SHARE),
        "reference": reference,
        "items": items,
        "training_interactions": interactions,
        "groups": compare_groups(
            ranks, {user: item_group[targets[user]] for user in users}, TAIL_GROUPS, reference, resamples, seed
        ),
    }


def cold_breakdown(
    ranks: Mapping[str, Mapping[str, int]],
    targets: Mapping[str, str],
    cold_items: Collection[str],
    catalog_size: int,
    reference: str = "popularity",
    resamples: int = 10_000,
    seed: int = 0,
) -> dict:
    """The users ranked by ``reference``, split into those whose target is cold and the others, compared with
    :func:`compare_groups`: NDCG@10 and HR@10 with paired intervals against ``reference``, and each group's rank
    distribution (median rank, HR@50, HR@100).

    Returns ``{"definition", "reference", "items": {"cold": n, "warm": catalog_size - n}, "groups": {...}}``.

    Example:
        >>> ranks = {"model": {"u1": 40, "u2": 2}, "popularity": {"u1": 900, "u2": 3}}
        >>> result = cold_breakdown(ranks, {"u1": "x", "u2": "y"}, {"x"}, catalog_size=1000, resamples=10)
        >>> result["groups"]["cold"]["metrics"]["model"]["hr@50"], result["groups"]["warm"]["users"]
        (1.0, 1)
    """
    cold = set(cold_items)
    users = _users(ranks, reference, targets)
    return {
        "definition": COLD_DEFINITION,
        "reference": reference,
        "items": {"cold": len(cold), "warm": catalog_size - len(cold)},
        "groups": compare_groups(
            ranks,
            {user: "cold" if targets[user] in cold else "warm" for user in users},
            COLD_GROUPS,
            reference,
            resamples,
            seed,
        ),
    }


def _users(ranks: Mapping[str, Mapping[str, int]], reference: str, targets: Mapping[str, str]) -> list[str]:
    if reference not in ranks:
        raise ValueError(f"the reference ranker {reference!r} has no ranks (rankers: {sorted(ranks)})")
    users = list(ranks[reference])
    missing = [user for user in users if user not in targets]
    if missing:
        raise ValueError(f"no target for {len(missing)} ranked users, e.g. {missing[:3]}")
    return users


def format_group_table(breakdown: dict, names: Mapping[str, str] | None = None, metric: str = "ndcg@10") -> str:
    """A markdown table of a breakdown: one row per group (its catalog items and users), each ranker's ``metric``,
    and each ranker's paired difference from the reference with its 95% interval. ``names`` renames rankers.

    Example:
        >>> ranks = {"model": {"u1": 1, "u2": 8}, "popularity": {"u1": 3, "u2": 8}}
        >>> table = format_group_table(cold_breakdown(ranks, {"u1": "x", "u2": "y"}, {"x"}, 10, resamples=10))
        >>> table.splitlines()[2]
        '| cold | 1 | 1 | 1.0000 | 0.5000 | +0.5000 [+0.5000, +0.5000] |'
    """
    names = dict(names or {})
    reference = breakdown["reference"]
    rankers = _rankers(breakdown)
    others = [name for name in rankers if name != reference]
    label = metric.upper()
    header = ["target group", "catalog items", "users", *(f"{names.get(r, r)} {label}" for r in rankers)]
    header += [f"{names.get(r, r)} - {names.get(reference, reference)} {label} [95% interval]" for r in others]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for group, entry in breakdown["groups"].items():
        cells = [group, str(breakdown["items"].get(group, "")), str(entry["users"])]
        if entry["users"]:
            cells += [f"{entry['metrics'][r][metric]:.4f}" for r in rankers]
            for r in others:
                paired = entry["paired"][r][metric]
                low, high = paired["interval"]
                cells.append(f"{paired['difference']:+.4f} [{low:+.4f}, {high:+.4f}]")
        else:
            cells += ["-"] * (len(rankers) + len(others))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_rank_distribution(breakdown: dict, group: str, names: Mapping[str, str] | None = None) -> str:
    """A markdown table of one group's rank distribution: per ranker, median rank, HR@10, HR@50, HR@100, NDCG@10.

    Example:
        >>> ranks = {"model": {"u1": 40, "u2": 2}, "popularity": {"u1": 900, "u2": 3}}
        >>> table = format_rank_distribution(cold_breakdown(ranks, {"u1": "x", "u2": "y"}, {"x"}, 1000), "cold")
        >>> table.splitlines()[2]
        '| model | 1 | 40 | 0.0000 | 1.0000 | 1.0000 | 0.0000 |'
    """
    names = dict(names or {})
    entry = breakdown["groups"][group]
    lines = [
        f"| ranker ({group} targets) | users | median rank | HR@10 | HR@50 | HR@100 | NDCG@10 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for ranker in _rankers(breakdown):
        if not entry["users"]:
            lines.append(f"| {names.get(ranker, ranker)} | 0 | - | - | - | - | - |")
            continue
        m = entry["metrics"][ranker]
        lines.append(
            f"| {names.get(ranker, ranker)} | {entry['users']} | {m['median_rank']:g} | {m['hr@10']:.4f} | "
            f"{m['hr@50']:.4f} | {m['hr@100']:.4f} | {m['ndcg@10']:.4f} |"
        )
    return "\n".join(lines)


def _rankers(breakdown: dict) -> list[str]:
    """The rankers of a breakdown, the reference last (the order of the first group with users)."""
    for entry in breakdown["groups"].values():
        if entry["users"]:
            names = list(entry["metrics"])
            return [name for name in names if name != breakdown["reference"]] + [breakdown["reference"]]
    return []
