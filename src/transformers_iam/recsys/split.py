"""Where interactions become a leave-one-out split (docs/architecture.md, evaluation protocol).

Each user's interactions are sorted by timestamp with a *stable* sort (ties keep file order;
ml-100k has many), the last item is the test target, the second to last the validation
target, and the test history includes the validation item.

The cold-item protocol (``cold_items=0.2``) makes a seeded share of the items with interactions
*cold*: every interaction with them leaves the training part of each user's sequence (never a
training target, never in a training history), while the validation and test rows stay exactly
those of the plain split (cold items in their histories and as their targets).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow
from datasets import Dataset, DatasetInfo
from datasets.table import InMemoryTable

from ..core.catalog import ItemCatalog, catalog_fingerprint
from .data import EXAMPLE_FEATURES, DataFormatError, Interaction, LeaveOneOutData, gc_paused


def choose_cold_items(
    sequences: dict[str, list[str]], catalog: ItemCatalog, share: float, seed: int
) -> tuple[str, ...]:
    """A seeded random ``share`` of the items that occur in ``sequences``, in catalog order.

    The draw depends only on the seed and on which items have interactions (taken in catalog order), not on the
    file order or on Python's hash seed; it uses its own random stream, so the cold set is the same whatever else
    the seed drives.

    Example:
        >>> catalog = ItemCatalog(["a", "b", "c", "d"], ["A", "B", "C", "D"])
        >>> choose_cold_items({"u": ["d", "a", "b"]}, catalog, share=0.34, seed=0)
        ('b',)
    """
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
        raise ValueError(f"cold_items must be a share in (0, 1), got {share!r}")
    present = {item for items in sequences.values() for item in items}
    candidates = [item_id for item_id in catalog.item_ids if item_id in present]
    count = round(share * len(candidates))
    if not 0 < count < len(candidates):
        raise ValueError(
            f"cold_items={share:g} of {len(candidates)} items with interactions makes {count} cold items: the "
            "cold-item protocol needs at least one cold and one warm item"
        )
    chosen = set(random.Random(f"cold-items {seed}").sample(candidates, count))
    return tuple(item_id for item_id in candidates if item_id in chosen)


def compile_cold_item_pattern(pattern: str) -> re.Pattern:
    """``cold_item_pattern`` compiled, or a ValueError naming it (checked where a run's arguments are read, too)."""
    try:
        return re.compile(pattern)
    except (re.error, TypeError) as error:
        raise ValueError(f"cold_item_pattern {pattern!r} is not a regular expression: {error}") from None


def cold_items_matching(sequences: dict[str, list[str]], catalog: ItemCatalog, pattern: str) -> tuple[str, ...]:
    r"""The items with interactions whose text matches the regular expression ``pattern`` (``re.search``), in catalog
    order: the new-arrivals protocol, where the newest releases are the items no model trained on.

    Example:
        >>> catalog = ItemCatalog(["a", "b", "c"], ["A (1999) | Drama", "B (2000) | Comedy", "C (2000) | Drama"])
        >>> cold_items_matching({"u": ["a", "b"]}, catalog, r"\(2000\) \|")  # c has no interaction
        ('b',)
    """
    compiled = compile_cold_item_pattern(pattern)
    present = {item for items in sequences.values() for item in items}
    candidates = [item_id for item_id in catalog.item_ids if item_id in present]
    chosen = tuple(item_id for item_id in candidates if compiled.search(catalog.text_of(item_id)))
    if not 0 < len(chosen) < len(candidates):
        raise ValueError(
            f"cold_item_pattern {pattern!r} matches the texts of {len(chosen)} of the {len(candidates)} items with "
            "interactions: the protocol needs at least one cold and one warm item"
        )
    return chosen


def leave_one_out(
    interactions: Sequence[Interaction],
    catalog: ItemCatalog,
    name: str = "dataset",
    max_history: int | None = 20,
    train_examples_per_user: int | None = None,
    seed: int = 0,
    train_windows: bool = False,
    cold_items: float | None = None,
    cold_item_pattern: str | None = None,
) -> LeaveOneOutData:
    r"""Split interactions leave-one-out (docs/architecture.md, "Evaluation protocol").

    Training examples are prefixes of each user's training sequence (all but the last two
    items): every prefix with at least one history item, or, with ``train_examples_per_user``,
    a seeded random sample of that many prefixes per user. Training histories keep the newest
    ``max_history`` items; validation and test histories are complete (the collator renders
    the newest items that fit, and ranking excludes the whole history when asked).

    With ``train_windows`` (for every-item supervision, where one example gives a target after
    each of its items), the training sequence is instead cut into consecutive windows of
    ``max_history`` items plus the item after them, overlapping by one item, so that every
    training item but the user's first is a target exactly once.

    With ``cold_items`` (a share in (0, 1)), :func:`choose_cold_items` draws that share of the items with
    interactions (seeded by ``seed``) and the training sequences lose every interaction with them before the
    examples above are cut; which items are each user's validation and test targets does not change. With
    ``cold_item_pattern`` instead, the cold items are those whose text matches it (:func:`cold_items_matching`:
    the new-arrivals protocol, e.g. ``r"\(2000\) \|"`` for ML-1M's films of 2000).
    """
    if cold_items is not None and cold_item_pattern is not None:
        raise ValueError("cold_items (a random share) and cold_item_pattern (items by their text): choose one")
    _check_limits(max_history=max_history, train_examples_per_user=train_examples_per_user)
    if not interactions:
        raise ValueError(f"{name}: no interactions")
    with gc_paused():
        by_user, duplicates = _group_by_user(interactions, catalog)
        sequences, ties, dropped = _time_ordered(by_user)
        if not sequences:
            raise ValueError(f"{name}: no user has the 3 interactions a leave-one-out split needs")
        if cold_item_pattern is not None:
            cold = cold_items_matching(sequences, catalog, cold_item_pattern)
        else:
            cold = () if cold_items is None else choose_cold_items(sequences, catalog, cold_items, seed)
        rows = _split_rows(sequences, set(cold), max_history, train_examples_per_user, seed, train_windows)
        statistics = {
            **_sequence_statistics(name, catalog, sequences),
            "timestamp_ties": ties,
            "dropped_users": dropped,
            "duplicate_interactions": duplicates,
            "train_examples": len(rows.train["target"]),
            "max_history": max_history,
            "train_examples_per_user": train_examples_per_user,
            "train_windows": train_windows,
            # what makes two runs' cold items the same (a SASRec reference is matched on it); None: no cold items
            "cold_items": _cold_statistics(cold, cold_items, cold_item_pattern, seed, rows) if cold else None,
        }
        settings = {
            "max_history": max_history,
            "train_examples_per_user": train_examples_per_user,
            "seed": seed,
            "train_windows": train_windows,
            "cold_items": list(cold),
        }
        fingerprint = _fingerprint(sequences, settings)[:40]
        return _leave_one_out_data(catalog, sequences, rows, statistics, cold, fingerprint)


def _check_limits(**limits: int | None) -> None:
    """Refuse a limit that is neither ``None`` (no limit) nor a positive int (a bool is not a count)."""
    for argument, value in limits.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{argument} must be None (no limit) or an int >= 1, got {value!r}")


def _group_by_user(
    interactions: Sequence[Interaction], catalog: ItemCatalog
) -> tuple[dict[str, list[Interaction]], int]:
    """Each user's interactions in file order, and how many exact duplicates (same user, item and time) there are.

    Raises :class:`DataFormatError` for a timestamp that is not a finite number and then for an item that is not in
    the catalog, naming the interaction's source.
    """
    by_user: dict[str, list[Interaction]] = defaultdict(list)
    seen, duplicates = set(), 0
    for interaction in interactions:
        timestamp = interaction.timestamp
        if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)) or not math.isfinite(timestamp):
            # NaN compares false with everything: a stable sort would then reorder that user's whole history
            raise DataFormatError(
                f"{interaction.source}: user {interaction.user_id!r}, item {interaction.item_id!r}: the "
                f"timestamp must be a finite number, got {interaction.timestamp!r}"
            )
        # an exact repeat (same user, item and time) is kept, as the data says it; it is counted and reported
        key = (interaction.user_id, interaction.item_id, interaction.timestamp)
        duplicates += key in seen
        seen.add(key)
        by_user[interaction.user_id].append(interaction)
    # each distinct item looked up once (not once per interaction); the first interaction with an unknown one named
    unknown = {item_id for item_id in {item_id for _, item_id, _ in seen} if item_id not in catalog}
    if unknown:
        interaction = next(interaction for interaction in interactions if interaction.item_id in unknown)
        raise DataFormatError(
            f"{interaction.source}: user {interaction.user_id!r} interacted with item {interaction.item_id!r}, "
            "which is not in the catalog"
        )
    return by_user, duplicates


def _time_ordered(by_user: dict[str, list[Interaction]]) -> tuple[dict[str, list[str]], int, int]:
    """Each user's item ids sorted by timestamp, stably (ties keep file order), how many interactions share their
    user's timestamp with another, and how many users were dropped for having fewer than 3 interactions."""
    sequences, ties, dropped = {}, 0, 0
    for user, events in by_user.items():
        if len(events) < 3:
            dropped += 1
            continue
        events = sorted(events, key=lambda event: event.timestamp)  # stable: ties keep file order
        timestamps = [event.timestamp for event in events]
        ties += sum(
            1
            for i, t in enumerate(timestamps)
            if (i > 0 and timestamps[i - 1] == t) or (i + 1 < len(timestamps) and timestamps[i + 1] == t)
        )
        sequences[user] = [event.item_id for event in events]
    return sequences, ties, dropped


def _new_rows() -> dict[str, list]:
    """Empty columns of one split, filled row by row and handed to arrow as they are (see :func:`_to_dataset`)."""
    return {"user_id": [], "history": [], "target": []}


@dataclass
class _SplitRows:
    """The columns of each split, and what the cold-item protocol left out (0 without cold items)."""

    train: dict[str, list] = field(default_factory=_new_rows)
    valid: dict[str, list] = field(default_factory=_new_rows)
    test: dict[str, list] = field(default_factory=_new_rows)
    warm_valid: dict[str, list] = field(default_factory=_new_rows)  # filled only under the cold-item protocol
    training_interactions_removed: int = 0
    valid_users_with_cold_target: int = 0
    valid_users_with_only_cold_history: int = 0
    test_users_with_cold_target: int = 0


def _split_rows(
    sequences: dict[str, list[str]],
    cold: set[str],
    max_history: int | None,
    train_examples_per_user: int | None,
    seed: int,
    train_windows: bool,
) -> _SplitRows:
    """Every user's validation and test row, warm validation row (under the cold-item protocol) and training rows
    (see :func:`leave_one_out`), users in the order of ``sequences``.

    One random stream, seeded by ``seed``, samples the training examples of the users in turn, so a user's sample
    depends on the users before it: the order of the loop is part of the output.
    """
    rows = _SplitRows()
    rng = random.Random(seed)
    for user, items in sequences.items():
        _append(rows.valid, user, items[:-2], items[-2])
        _append(rows.test, user, items[:-1], items[-1])
        train_sequence = [item for item in items[:-2] if item not in cold] if cold else items[:-2]
        if cold:  # the validation view of training: the cold-free training sequence, a warm target
            rows.training_interactions_removed += len(items) - 2 - len(train_sequence)
            rows.test_users_with_cold_target += items[-1] in cold
            if items[-2] in cold:
                rows.valid_users_with_cold_target += 1
            elif not train_sequence:
                rows.valid_users_with_only_cold_history += 1
            else:
                _append(rows.warm_valid, user, train_sequence, items[-2])
        spans = _training_spans(len(train_sequence), max_history, train_windows)
        if train_examples_per_user is not None and len(spans) > train_examples_per_user:
            spans = sorted(rng.sample(spans, train_examples_per_user))
        for start, cut in spans:
            _append(rows.train, user, train_sequence[start:cut], train_sequence[cut])
    return rows


def _training_spans(length: int, max_history: int | None, train_windows: bool) -> list[tuple[int, int]]:
    """The training examples of a training sequence of ``length`` items, as ``(first history index, target index)``:
    with ``train_windows`` consecutive windows of ``max_history`` items that overlap by one (each window's target is
    the next window's first item), otherwise every prefix with its history cut to the newest ``max_history`` items.

    Example:
        >>> _training_spans(5, 2, train_windows=True)
        [(0, 2), (2, 4)]
        >>> _training_spans(4, 2, train_windows=False)
        [(0, 1), (0, 2), (1, 3)]
        >>> _training_spans(0, None, train_windows=True)  # every training item cold: no example, no error
        []
    """
    if train_windows:
        size = max_history or max(length, 1)
        return [(start, min(start + size, length - 1)) for start in range(0, length - 1, size)]
    return [(max(0, cut - (max_history or cut)), cut) for cut in range(1, length)]


def _sequence_statistics(name: str, catalog: ItemCatalog, sequences: dict[str, list[str]]) -> dict:
    """The first entries of :attr:`LeaveOneOutData.statistics`: users, items and sequence lengths."""
    lengths = sorted(len(items) for items in sequences.values())
    return {
        "name": name,
        "users": len(sequences),
        "items": len(catalog),
        "items_with_interactions": len({item for items in sequences.values() for item in items}),
        "interactions": sum(lengths),
        "history_min": lengths[0],
        "history_median": lengths[len(lengths) // 2],
        "history_mean": sum(lengths) / len(lengths),
        "history_max": lengths[-1],
    }


def _cold_statistics(
    cold: tuple[str, ...], share: float | None, pattern: str | None, seed: int, rows: _SplitRows
) -> dict:
    """``statistics["cold_items"]``: how the cold items were drawn, their fingerprint and what they left out."""
    return {
        "share": share,
        **({"pattern": pattern} if pattern is not None else {}),
        "seed": seed,
        "items": len(cold),
        "fingerprint": catalog_fingerprint(cold),
        "training_interactions_removed": rows.training_interactions_removed,
        "valid_users_with_cold_target": rows.valid_users_with_cold_target,
        "valid_users_with_only_cold_history": rows.valid_users_with_only_cold_history,
        "warm_valid_users": len(rows.warm_valid["target"]),
        "test_users_with_cold_target": rows.test_users_with_cold_target,
    }


def _leave_one_out_data(
    catalog: ItemCatalog,
    sequences: dict[str, list[str]],
    rows: _SplitRows,
    statistics: dict,
    cold: tuple[str, ...],
    fingerprint: str,
) -> LeaveOneOutData:
    """The split's datasets, each fingerprinted ``<fingerprint>-<split>``; a warm validation set only when items are
    cold (otherwise ``warm_valid`` is ``valid``)."""
    return LeaveOneOutData(
        catalog=catalog,
        train=_to_dataset(rows.train, f"{fingerprint}-train"),
        valid=_to_dataset(rows.valid, f"{fingerprint}-valid"),
        test=_to_dataset(rows.test, f"{fingerprint}-test"),
        sequences=sequences,
        statistics=statistics,
        cold_items=cold,
        warm_valid=_to_dataset(rows.warm_valid, f"{fingerprint}-warm-valid") if cold else None,
    )


def _append(rows: dict[str, list], user: str, history: list[str], target: str) -> None:
    rows["user_id"].append(user)
    rows["history"].append(history)  # a fresh list from every caller (a slice), never mutated after
    rows["target"].append(target)


def _fingerprint(sequences: dict[str, list[str]], parameters: dict) -> str:
    """A sha256 of everything the split's rows are made from (the sequences, in order, and the split's settings)."""
    digest = hashlib.sha256(json.dumps(parameters, sort_keys=True, default=str).encode("utf-8"))
    for user, items in sequences.items():
        digest.update(("\x1f".join([user, *items]) + "\x1e").encode("utf-8"))
    return digest.hexdigest()


def _to_dataset(rows: dict[str, list], fingerprint: str) -> Dataset:
    """An in-memory dataset of the rows, with the given fingerprint.

    Built from arrow arrays directly: ``Dataset.from_dict`` would fingerprint the table by pickling all of it, which
    on ML-1M's ~1M training rows took seconds, held several copies of the table in memory (7 GB peak with 50-item
    histories) and overflowed arrow's 2 GB string offsets when histories were uncapped. A fingerprint only names
    cache files, which in-memory datasets never write; this one is still a function of the content.
    """
    schema = EXAMPLE_FEATURES.arrow_schema
    table = InMemoryTable(pyarrow.table({name: pyarrow.array(rows[name], schema.field(name).type) for name in rows}))
    return Dataset(table, info=DatasetInfo(features=EXAMPLE_FEATURES), fingerprint=fingerprint)
