"""Paired comparison of two rankers user by user: mean difference, paired bootstrap interval, sign test.

Both rankers are evaluated on the same users, so the per-user differences carry the comparison; the unpaired
standard error of each mean (docs/results.md, "Noise") overstates the uncertainty of their difference.

Example:
    >>> a = {"u1": 1, "u2": 3, "u3": 20}
    >>> b = {"u1": 2, "u2": 3, "u3": 40}
    >>> result = paired_comparison(a, b, resamples=1000)
    >>> round(result.difference, 4), result.wins, result.losses, result.p_value
    (0.123, 1, 0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

PAIRED_PROTOCOL = (
    "paired over the same users: mean of the per-user differences (A - B), 95% percentile interval from a paired "
    "bootstrap over users ({resamples:,} resamples, seed {seed}), two-sided exact sign test over the users whose "
    "per-user value differs"
)


def per_user_values(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Each user's ``ndcg@K``, ``hr@K`` or ``mrr@K`` from its 1-based rank (their means are metrics_from_ranks').

    Example:
        >>> per_user_values(np.array([1, 3, 11]), "ndcg@10").round(3).tolist()
        [1.0, 0.5, 0.0]
    """
    name, _, k = metric.partition("@")
    if name not in ("ndcg", "hr", "mrr") or not k.isdigit():
        raise ValueError(f"metric must be ndcg@K, hr@K or mrr@K, got {metric!r}")
    ranks = np.asarray(ranks, dtype=np.float64)
    hit = ranks <= int(k)
    value = {"ndcg": 1.0 / np.log2(ranks + 1.0), "hr": np.ones_like(ranks), "mrr": 1.0 / ranks}[name]
    return np.where(hit, value, 0.0)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial (p = 1/2) p-value over the non-tied users.

    Example:
        >>> sign_test(30, 0) == 2 * 0.5**30
        True
        >>> sign_test(0, 0)
        1.0
    """
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass
class PairedResult:
    """A vs B on one metric; ``relative*`` are (A - B) / B, undefined (NaN) when B's mean is 0."""

    metric: str
    users: int
    mean_a: float
    mean_b: float
    difference: float
    interval: tuple[float, float]
    relative: float
    relative_interval: tuple[float, float]
    wins: int  # users where A is strictly better
    losses: int
    ties: int
    p_value: float
    resamples: int
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)


def paired_comparison(
    ranks_a: Mapping[str, int] | Sequence[Mapping[str, int]],
    ranks_b: Mapping[str, int] | Sequence[Mapping[str, int]],
    metric: str = "ndcg@10",
    resamples: int = 10_000,
    seed: int = 0,
) -> PairedResult:
    """Compare two rankers on the same users from their per-user ranks (``{user_id: rank}``); a side given as several
    runs (seeds of one configuration) is each user's value averaged over them.

    The bootstrap resamples users with replacement (the same users for A and B, which is what makes it paired) and
    takes the 2.5th and 97.5th percentiles of the mean difference, and of the relative difference
    ``mean_a / mean_b - 1`` of the same resamples.

    Example:
        >>> seeds = paired_comparison([{"u1": 1, "u2": 11}, {"u1": 11, "u2": 11}], {"u1": 11, "u2": 11})
        >>> seeds.mean_a, seeds.difference
        (0.25, 0.25)
    """
    runs_a, runs_b = _runs(ranks_a), _runs(ranks_b)
    users_a, users_b = set(runs_a[0]), set(runs_b[0])
    if users_a != users_b:
        only_a, only_b = sorted(users_a - users_b), sorted(users_b - users_a)
        raise ValueError(
            f"a paired comparison needs the same users: {len(only_a)} only in A {only_a[:3]}, "
            f"{len(only_b)} only in B {only_b[:3]}"
        )
    for side, runs in (("A", runs_a), ("B", runs_b)):
        for index, run in enumerate(runs[1:], start=2):
            if set(run) != users_a:
                raise ValueError(f"run {index} of {side} holds other users than its first run: seeds must share them")
    if not users_a:
        raise ValueError("no users to compare")
    users = sorted(users_a)

    def averaged(runs: list[Mapping[str, int]]) -> np.ndarray:
        return np.mean([per_user_values(np.array([run[user] for user in users]), metric) for run in runs], axis=0)

    a, b = averaged(runs_a), averaged(runs_b)
    rng = np.random.default_rng(seed)
    sums_a, sums_b = np.empty(resamples), np.empty(resamples)
    for start in range(0, resamples, 1000):  # chunks: 10,000 x users indices at once would be ~80 MB for 943 users
        count = min(1000, resamples - start)
        indices = rng.integers(0, len(users), size=(count, len(users)))
        sums_a[start : start + count] = a[indices].sum(1)
        sums_b[start : start + count] = b[indices].sum(1)
    differences = (sums_a - sums_b) / len(users)
    # a resample where both means are 0 shows no difference (0); where only B's is 0 the ratio is undefined
    relatives = np.where(
        sums_b > 0, sums_a / np.where(sums_b > 0, sums_b, 1.0) - 1.0, np.where(sums_a == 0, 0.0, np.nan)
    )
    mean_a, mean_b = float(a.mean()), float(b.mean())
    wins, losses = int((a > b).sum()), int((a < b).sum())

    def percentiles(values: np.ndarray) -> tuple[float, float]:
        if np.isnan(values).any():  # some resample had B = 0: the relative interval is undefined
            return (math.nan, math.nan)
        low, high = np.percentile(values, [2.5, 97.5])
        return (float(low), float(high))

    return PairedResult(
        metric=metric,
        users=len(users),
        mean_a=mean_a,
        mean_b=mean_b,
        difference=mean_a - mean_b,
        interval=percentiles(differences),
        relative=mean_a / mean_b - 1.0 if mean_b > 0 else math.nan,
        relative_interval=percentiles(relatives),
        wins=wins,
        losses=losses,
        ties=len(users) - wins - losses,
        p_value=sign_test(wins, losses),
        resamples=resamples,
        seed=seed,
    )


def _runs(ranks: Mapping[str, int] | Sequence[Mapping[str, int]]) -> list[Mapping[str, int]]:
    runs = [ranks] if isinstance(ranks, Mapping) else list(ranks)
    if not runs:
        raise ValueError("a side of a paired comparison needs at least one run's ranks")
    return runs


def format_paired_table(rows: Mapping[str, PairedResult]) -> str:
    """A markdown table, one row per comparison (``"A vs B, metric"``), with the protocol line above it."""
    first = next(iter(rows.values()))
    lines = [
        PAIRED_PROTOCOL.format(resamples=first.resamples, seed=first.seed) + ".",
        "",
        "| comparison | users | A | B | A - B | 95% interval | relative | 95% interval (relative) "
        "| A wins / loses / ties | sign test p |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r.users} | {r.mean_a:.4f} | {r.mean_b:.4f} | {r.difference:+.4f} | "
            f"[{r.interval[0]:+.4f}, {r.interval[1]:+.4f}] | {_percent(r.relative)} | "
            f"[{_percent(r.relative_interval[0])}, {_percent(r.relative_interval[1])}] | "
            f"{r.wins} / {r.losses} / {r.ties} | {r.p_value:.3g} |"
        )
    return "\n".join(lines)


def _percent(value: float) -> str:
    return "nan" if math.isnan(value) else f"{100 * value:+.1f}%"


def comparison_sentence(result: PairedResult, name_a: str, name_b: str, split: str) -> str:
    """One sentence a person reads: the relative difference with the interval of that relative difference, the
    absolute difference beside it.

    A relative difference divides by B's mean. Where that mean is 0 (popularity in a smoke run of a few users can
    rank no target in the top 10) there is none: the sentence leads with the absolute difference and its interval and
    says why. Where B's mean is above 0 but some bootstrap resamples of users have none of B's hits, the relative
    interval is undefined: the sentence says so beside the absolute interval.

    Example:
        >>> r = paired_comparison({"u1": 1, "u2": 5}, {"u1": 2, "u2": 5}, resamples=100)
        >>> comparison_sentence(r, "IAM", "popularity", "test").split(",")[0]
        'IAM is +36.3% NDCG@10 over popularity on test (0.6934 vs 0.5089'
        >>> r = paired_comparison({"u1": 1, "u2": 5}, {"u1": 50, "u2": 50}, resamples=100)
        >>> sentence = comparison_sentence(r, "IAM", "popularity", "test")
        >>> sentence.split(",")[0]
        'IAM is +0.6934 NDCG@10 over popularity on test (0.6934 vs 0.0000'
        >>> sentence.split("; ")[1]
        "no relative difference: it would divide by popularity's NDCG@10, 0 on these users"
    """
    metric = result.metric.upper()
    means = f"({result.mean_a:.4f} vs {result.mean_b:.4f}, {result.users} users)"
    absolute_interval = f"[{result.interval[0]:+.4f}, {result.interval[1]:+.4f}]"
    if math.isnan(result.relative):
        comparison = (
            f"{name_a} is {result.difference:+.4f} {metric} over {name_b} on {split} {means}, 95% paired bootstrap "
            f"interval of the absolute difference {absolute_interval}; no relative difference: it would divide by "
            f"{name_b}'s {metric}, 0 on these users"
        )
    elif math.isnan(result.relative_interval[0]):
        comparison = (
            f"{name_a} is {_percent(result.relative)} {metric} over {name_b} on {split} {means}, absolute difference "
            f"{result.difference:+.4f} with 95% paired bootstrap interval {absolute_interval}; no interval of the "
            f"relative difference: it would divide by {name_b}'s {metric}, 0 in some resamples of these users"
        )
    else:
        comparison = (
            f"{name_a} is {_percent(result.relative)} {metric} over {name_b} on {split} {means}, 95% paired "
            f"bootstrap interval of the relative difference [{_percent(result.relative_interval[0])}, "
            f"{_percent(result.relative_interval[1])}] (absolute difference {result.difference:+.4f}, interval "
            f"{absolute_interval})"
        )
    return (
        f"{comparison}; {name_a} better for {result.wins} users, worse for {result.losses}, "
        f"sign test p = {result.p_value:.3g}"
    )
