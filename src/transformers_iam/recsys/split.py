"""Where interactions become a leave-one-out split (docs/architecture.md, evaluation protocol).

Each user's interactions are sorted by timestamp with a *stable* sort (ties keep file order;
ml-100k has many), the last item is the test target, the second to last the validation
target, and the test history includes the validation item.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from datasets import Dataset

from ..core.catalog import ItemCatalog


@dataclass
class Interaction:
    user_id: str
    item_id: str
    timestamp: float
    source: str  # "file:line", for error messages


@dataclass
class LeaveOneOutData:
    """A leave-one-out split: HF datasets of ``{"user_id", "history", "target"}`` and the catalog.

    ``train`` holds training examples (prefixes of each user's training sequence, histories
    capped at ``max_history``), ``valid`` one example per user (history = the whole training
    sequence), ``test`` one per user (history = training sequence + validation item).
    ``sequences`` keeps every user's full time-ordered sequence.
    """

    catalog: ItemCatalog
    train: Dataset
    valid: Dataset
    test: Dataset
    sequences: dict[str, list[str]]
    statistics: dict = field(default_factory=dict)

    def visible_sequences(self, split: str) -> dict[str, list[str]]:
        """Each user's interactions known before the split's targets: ``train`` and ``valid`` see the training
        sequence, ``test`` sees it plus the validation item."""
        if split not in ("train", "valid", "test"):
            raise ValueError(f"split must be 'train', 'valid' or 'test', got {split!r}")
        cut = -1 if split == "test" else -2
        return {user: items[:cut] for user, items in self.sequences.items()}

    def split(self, name: str) -> Dataset:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]

    def describe(self) -> str:
        stats = self.statistics
        return (
            f"{stats['name']}: {stats['users']} users, {stats['items']} items in the catalog "
            f"({stats['items_with_interactions']} with interactions), {stats['interactions']} interactions; "
            f"history length min/median/mean/max {stats['history_min']}/{stats['history_median']}/"
            f"{stats['history_mean']:.1f}/{stats['history_max']}; {stats['timestamp_ties']} interactions share "
            f"their user's timestamp with another (file order kept); {stats.get('duplicate_interactions', 0)} exact "
            f"duplicate interactions (kept); {stats['dropped_users']} users dropped "
            f"(fewer than 3 interactions); {len(self.train)} training examples"
        )


class DataFormatError(ValueError):
    """A data file is missing a column or has a malformed row; the message names file, line and column."""


def leave_one_out(
    interactions: Sequence[Interaction],
    catalog: ItemCatalog,
    name: str = "dataset",
    max_history: int | None = 20,
    train_examples_per_user: int | None = None,
    seed: int = 0,
    train_windows: bool = False,
) -> LeaveOneOutData:
    """Split interactions leave-one-out (docs/architecture.md, "Evaluation protocol").

    Training examples are prefixes of each user's training sequence (all but the last two
    items): every prefix with at least one history item, or, with ``train_examples_per_user``,
    a seeded random sample of that many prefixes per user. Training histories keep the newest
    ``max_history`` items; validation and test histories are complete (the collator renders
    the newest items that fit, and ranking excludes the whole history when asked).

    With ``train_windows`` (for every-item supervision, where one example gives a target after
    each of its items), the training sequence is instead cut into consecutive windows of
    ``max_history`` items plus the item after them, overlapping by one item, so that every
    training item but the user's first is a target exactly once.
    """
    for argument, value in (("max_history", max_history), ("train_examples_per_user", train_examples_per_user)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{argument} must be None (no limit) or an int >= 1, got {value!r}")
    if not interactions:
        raise ValueError(f"{name}: no interactions")
    by_user: dict[str, list[Interaction]] = defaultdict(list)
    seen, duplicates = set(), 0
    for interaction in interactions:
        timestamp = interaction.timestamp
        if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)) or not math.isfinite(timestamp):
            # NaN compares false with everything: a stable sort would then reorder that user's whole history
            raise DataFormatError(
                f"{interaction.source}: user {interaction.user_id!r}, item {interaction.item_id!r}: the timestamp "
                f"must be a finite number, got {interaction.timestamp!r}"
            )
        # an exact repeat (same user, item and time) is kept, as the data says it; it is counted and reported
        key = (interaction.user_id, interaction.item_id, interaction.timestamp)
        duplicates += key in seen
        seen.add(key)
        if interaction.item_id not in catalog:
            raise DataFormatError(
                f"{interaction.source}: user {interaction.user_id!r} interacted with item {interaction.item_id!r}, "
                "which is not in the catalog"
            )
        by_user[interaction.user_id].append(interaction)

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
    if not sequences:
        raise ValueError(f"{name}: no user has the 3 interactions a leave-one-out split needs")

    rng = random.Random(seed)
    train_rows, valid_rows, test_rows = [], [], []
    for user, items in sequences.items():
        train_sequence = items[:-2]
        valid_rows.append({"user_id": user, "history": list(train_sequence), "target": items[-2]})
        test_rows.append({"user_id": user, "history": items[:-1], "target": items[-1]})
        if train_windows:  # (first history item, target) of consecutive windows
            size = max_history or len(train_sequence)
            spans = [
                (start, min(start + size, len(train_sequence) - 1)) for start in range(0, len(train_sequence) - 1, size)
            ]
        else:  # every prefix, its history cut to the newest max_history items
            spans = [(max(0, cut - (max_history or cut)), cut) for cut in range(1, len(train_sequence))]
        if train_examples_per_user is not None and len(spans) > train_examples_per_user:
            spans = sorted(rng.sample(spans, train_examples_per_user))
        for start, cut in spans:
            train_rows.append({"user_id": user, "history": train_sequence[start:cut], "target": train_sequence[cut]})

    lengths = sorted(len(items) for items in sequences.values())
    statistics = {
        "name": name,
        "users": len(sequences),
        "items": len(catalog),
        "items_with_interactions": len({item for items in sequences.values() for item in items}),
        "interactions": sum(lengths),
        "history_min": lengths[0],
        "history_median": lengths[len(lengths) // 2],
        "history_mean": sum(lengths) / len(lengths),
        "history_max": lengths[-1],
        "timestamp_ties": ties,
        "dropped_users": dropped,
        "duplicate_interactions": duplicates,
        "train_examples": len(train_rows),
        "max_history": max_history,
        "train_examples_per_user": train_examples_per_user,
        "train_windows": train_windows,
    }
    return LeaveOneOutData(
        catalog=catalog,
        train=Dataset.from_list(train_rows),
        valid=Dataset.from_list(valid_rows),
        test=Dataset.from_list(test_rows),
        sequences=sequences,
        statistics=statistics,
    )
