"""Data loaders: the leave-one-out split on ml-100k and on plain tables, and their errors."""

from __future__ import annotations

import codecs
import csv
import json

import pytest

from transformers_iam.recsys.baselines import evaluate_popularity
from transformers_iam.recsys.data import DataFormatError
from transformers_iam.recsys.readers import (
    MAX_FIELD_CHARS,
    load_interactions_table,
    load_recbole_atomic,
    movielens_100k_directory,
)

from ..testing_utils import requires_movielens_100k


@pytest.fixture(scope="module")
def ml100k():
    return load_recbole_atomic(movielens_100k_directory(), max_history=None, train_examples_per_user=None)


@requires_movielens_100k
def test_ml100k_statistics_and_split(ml100k):
    stats = ml100k.statistics
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100000)
    assert len(ml100k.valid) == len(ml100k.test) == 943
    # every user: test history = valid history + valid target; train prefixes end before the valid target
    for valid, test in zip(ml100k.valid, ml100k.test):
        assert test["history"] == valid["history"] + [valid["target"]]
    assert len(ml100k.train) == 100000 - 3 * 943  # every prefix of each training sequence, history >= 1
    assert ml100k.catalog.text_of("1") == "Toy Story (1995) | Animation, Children's, Comedy"


def test_timestamp_ties_keep_file_order(tmp_path):
    (tmp_path / "toy.item").write_text(
        "item_id:token\ttitle:token_seq\n" + "".join(f"{i}\tMovie {i}\n" for i in range(1, 6))
    )
    # user u: items 3, 1, 2 share a timestamp (file order 3, 1, 2), item 5 is earlier, item 4 later
    (tmp_path / "toy.inter").write_text(
        "user_id:token\titem_id:token\ttimestamp:float\nu\t3\t100\nu\t1\t100\nu\t5\t50\nu\t2\t100\nu\t4\t200\n"
    )
    data = load_recbole_atomic(str(tmp_path), name="toy", text_template="{title}", list_fields=())
    assert data.sequences["u"] == ["5", "3", "1", "2", "4"]
    assert data.test[0] == {"user_id": "u", "history": ["5", "3", "1", "2"], "target": "4"}
    assert data.valid[0]["target"] == "2"
    assert data.statistics["timestamp_ties"] == 3


@requires_movielens_100k
def test_popularity_on_ml100k_uses_only_visible_interactions(ml100k):
    metrics = evaluate_popularity(ml100k, "test", exclude_history=True)
    assert metrics["users"] == 943 and 0 < metrics["ndcg@10"] < metrics["hr@10"] < 1


def test_plain_tables_csv_and_jsonl(tmp_path):
    (tmp_path / "items.csv").write_text("item_id,title,genres\na,Alpha,Drama Comedy\nb,Beta,Horror\nc,Gamma,War\n")
    (tmp_path / "inter.jsonl").write_text(
        "\n".join(
            json.dumps({"user_id": "u1", "item_id": i, "timestamp": t}) for i, t in [("a", 1), ("b", 2), ("c", 3)]
        )
    )
    data = load_interactions_table(
        str(tmp_path / "inter.jsonl"),
        str(tmp_path / "items.csv"),
        text_template="{title} | {genres}",
        list_fields=("genres",),
    )
    assert data.catalog.text_of("a") == "Alpha | Drama, Comedy"
    assert data.test[0]["target"] == "c" and data.valid[0]["history"] == ["a"]


def test_malformed_row_names_file_line_and_column(tmp_path):
    (tmp_path / "x.item").write_text("item_id:token\ttitle:token_seq\n1\tA\n2\tB\n")
    (tmp_path / "x.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu\t1\t5\nu\t2\tsoon\n")
    with pytest.raises(DataFormatError, match=r"x\.inter:3: column 'timestamp' must be a number, got 'soon'"):
        load_recbole_atomic(str(tmp_path), name="x", text_template="{title}", list_fields=())
    (tmp_path / "x.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu\t1\n")
    with pytest.raises(DataFormatError, match=r"x\.inter:2: expected 3 columns"):
        load_recbole_atomic(str(tmp_path), name="x", text_template="{title}", list_fields=())
    (tmp_path / "x.inter").write_text("user_id:token\titem_id:token\nu\t1\n")
    with pytest.raises(DataFormatError, match=r"x\.inter:1: missing required column 'timestamp'"):
        load_recbole_atomic(str(tmp_path), name="x", text_template="{title}", list_fields=())


def test_unknown_item_and_missing_file(tmp_path):
    (tmp_path / "items.csv").write_text("item_id,title\na,Alpha\n")
    (tmp_path / "inter.csv").write_text("user_id,item_id,timestamp\nu1,a,1\nu1,zzz,2\n")
    with pytest.raises(
        DataFormatError, match=r"inter\.csv:3: user 'u1' interacted with item 'zzz', which is not in the catalog"
    ):
        load_interactions_table(str(tmp_path / "inter.csv"), str(tmp_path / "items.csv"), text_template="{title}")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_interactions_table(str(tmp_path / "nope.csv"), str(tmp_path / "items.csv"), text_template="{title}")
    with pytest.raises(DataFormatError, match=r"items\.csv:2: text template '\{name\}' needs column 'name'"):
        load_interactions_table(str(tmp_path / "inter.csv"), str(tmp_path / "items.csv"), text_template="{name}")


@requires_movielens_100k
def test_training_windows_make_every_training_item_but_the_first_a_target_once(ml100k):
    from transformers_iam.recsys.data import Interaction
    from transformers_iam.recsys.split import leave_one_out

    interactions = [
        Interaction(user, item_id, float(t), f"row {t}")
        for user, length in (("a", 26), ("b", 4))
        for t, item_id in enumerate(ml100k.catalog.item_ids[:length])
    ]
    data = leave_one_out(interactions, ml100k.catalog, max_history=10, train_windows=True)
    for user, length in (("a", 26), ("b", 4)):
        train_sequence = ml100k.catalog.item_ids[: length - 2]
        rows = [row for row in data.train if row["user_id"] == user]
        targets = [item for row in rows for item in row["history"][1:] + [row["target"]]]
        assert sorted(targets) == sorted(train_sequence[1:]), user  # each once, the first item never
        assert all(len(row["history"]) <= 10 for row in rows)
        for row in rows:  # each window is a contiguous run of the training sequence
            start = train_sequence.index(row["history"][0])
            assert train_sequence[start : start + len(row["history"]) + 1] == row["history"] + [row["target"]]


def write_toy(tmp_path, inter_rows: str, encoding: str = "utf-8", bom: bytes = b""):
    (tmp_path / "toy.item").write_text(
        "item_id:token\ttitle:token_seq\n" + "".join(f"{i}\tMovie {i}\n" for i in range(1, 6))
    )
    (tmp_path / "toy.inter").write_bytes(
        bom + ("user_id:token\titem_id:token\ttimestamp:float\n" + inter_rows).encode(encoding)
    )


def load_toy(tmp_path):
    return load_recbole_atomic(str(tmp_path), name="toy", text_template="{title}", list_fields=())


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity"])
def test_non_finite_timestamp_is_refused(tmp_path, value):
    write_toy(tmp_path, f"u\t1\t1\nu\t2\t{value}\nu\t3\t3\n")
    with pytest.raises(
        DataFormatError, match=rf"toy\.inter:3: column 'timestamp' must be a finite number, got '{value}'"
    ):
        load_toy(tmp_path)


def test_utf8_bom_is_skipped_and_other_encodings_are_named(tmp_path):
    write_toy(tmp_path, "u\t1\t1\nu\t2\t2\nu\t3\t3\n", bom=codecs.BOM_UTF8)
    assert load_toy(tmp_path).sequences["u"] == ["1", "2", "3"]  # the BOM did not hide the 'user_id' column
    write_toy(tmp_path, "u\t1\t1\nu\t2\t2\nu\t3\t3\n", encoding="utf-16")
    with pytest.raises(DataFormatError, match=r"toy\.inter: the file is UTF-16 or UTF-32"):
        load_toy(tmp_path)
    write_toy(tmp_path, "u\t1\t1\nu\t2\t2\nusé\t3\t3\n", encoding="latin-1")
    with pytest.raises(DataFormatError, match=r"toy\.inter:4:3: not UTF-8 \(byte 0xe9\)"):
        load_toy(tmp_path)


def test_duplicate_interactions_are_kept_and_counted_and_duplicate_items_refused(tmp_path):
    write_toy(tmp_path, "u\t1\t1\nu\t2\t2\nu\t2\t2\nu\t3\t3\n")
    data = load_toy(tmp_path)
    assert data.sequences["u"] == ["1", "2", "2", "3"] and data.statistics["duplicate_interactions"] == 1
    assert "1 exact duplicate interactions (kept)" in data.describe()
    (tmp_path / "items.csv").write_text("item_id,title\na,Alpha\nb,Beta\na,Again\n")
    (tmp_path / "inter.csv").write_text("user_id,item_id,timestamp\nu1,a,1\n")
    with pytest.raises(DataFormatError, match=r"items\.csv:4: item 'a' is already in the catalog \(.*items\.csv:2\)"):
        load_interactions_table(str(tmp_path / "inter.csv"), str(tmp_path / "items.csv"), text_template="{title}")


def test_empty_ids_and_bad_split_arguments_are_named(tmp_path):
    write_toy(tmp_path, "u\t1\t1\n\t2\t2\n")
    with pytest.raises(DataFormatError, match=r"toy\.inter:3: column 'user_id' is empty"):
        load_toy(tmp_path)
    write_toy(tmp_path, "u\t1\t1\nu\t2\t2\nu\t3\t3\n")
    with pytest.raises(ValueError, match="max_history must be None .* or an int >= 1, got 0"):
        load_recbole_atomic(str(tmp_path), name="toy", text_template="{title}", list_fields=(), max_history=0)


# -- every value refused where it enters, with file:line (issue 28) ---------------------------------------------------


def load_tables(tmp_path, items: str, inter: str = "user_id,item_id,timestamp\nu,a,1\nu,b,2\nu,a,3\n", **kwargs):
    """Write a catalog and an interactions table (their file names say the format) and read them."""
    items_name, items_text = items.split("\n", 1) if items.startswith("items.") else ("items.csv", items)
    inter_name, inter_text = inter.split("\n", 1) if inter.startswith("inter.") else ("inter.csv", inter)
    (tmp_path / items_name).write_text(items_text, encoding="utf-8")
    (tmp_path / inter_name).write_text(inter_text, encoding="utf-8")
    kwargs.setdefault("text_template", "{title}")
    return load_interactions_table(str(tmp_path / inter_name), str(tmp_path / items_name), **kwargs)


def test_a_csv_field_longer_than_csvs_own_limit_is_read(tmp_path):
    # csv's process-wide default is 131,072 characters: this used to end in a bare _csv.Error
    long_title = "word " * 40_000  # 200,000 characters, under MAX_FIELD_CHARS
    limit = csv.field_size_limit()
    data = load_tables(tmp_path, f'item_id,title\na,"{long_title}"\nb,Beta\n')
    assert data.catalog.text_of("a") == long_title.strip()
    assert csv.field_size_limit() == limit  # the process-wide limit is restored after the read


def test_a_csv_field_over_the_stated_limit_names_file_line_and_limit(tmp_path):
    title = "x" * (MAX_FIELD_CHARS + 1)
    with pytest.raises(
        DataFormatError, match=r"items\.csv:3: a field in the row starting here is longer than 1048576 characters"
    ):
        load_tables(tmp_path, f"item_id,title\na,Alpha\nb,{title}\n")


def test_an_unclosed_quote_names_the_line_its_row_starts_on(tmp_path):
    # a lenient reader glued "c,Gamma" into b's title: item c vanished from the catalog without a word
    with pytest.raises(DataFormatError, match=r"items\.csv:3: not valid CSV \(unexpected end of data\)"):
        load_tables(tmp_path, 'item_id,title\na,Alpha\nb,"Beta\nc,Gamma\n')


def test_a_stray_quote_is_refused(tmp_path):
    # a lenient reader read '"Al"pha' as 'Alpha'
    with pytest.raises(DataFormatError, match=r"items\.csv:2: not valid CSV \(',' expected after '\"'\)"):
        load_tables(tmp_path, 'item_id,title\na,"Al"pha\nb,Beta\n')


def test_an_empty_item_text_names_file_and_line(tmp_path):
    with pytest.raises(DataFormatError, match=r"items\.csv:3: the item's text is empty: column 'title' of text"):
        load_tables(tmp_path, "item_id,title\na,Alpha\nb,  \n")
    write_toy(tmp_path, "u\t1\t1\n")
    (tmp_path / "toy.item").write_text("item_id:token\ttitle:token_seq\tyear:token\n1\tA\t1995\n2\t\t\n")
    with pytest.raises(DataFormatError, match=r"toy\.item:3: the item's text is empty: columns 'title', 'year'"):
        load_recbole_atomic(str(tmp_path), name="toy", text_template="{title} ({year})", list_fields=())


def test_a_column_named_twice_in_a_header_is_refused(tmp_path):
    with pytest.raises(DataFormatError, match=r"items\.csv:1: column 'title' appears twice in the header"):
        load_tables(tmp_path, "item_id,title,title\na,Alpha,Other\nb,Beta,Other\n")
    write_toy(tmp_path, "u\t1\t1\n")
    (tmp_path / "toy.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\titem_id:token\nu\t1\t1\t2\n")
    with pytest.raises(DataFormatError, match=r"toy\.inter:1: column 'item_id' appears twice in the header"):
        load_toy(tmp_path)


def test_an_atomic_field_over_the_limit_names_file_line_and_column(tmp_path):
    write_toy(tmp_path, "u\t1\t1\n")
    (tmp_path / "toy.item").write_text(f"item_id:token\ttitle:token_seq\n1\tA\n2\t{'x' * (MAX_FIELD_CHARS + 1)}\n")
    with pytest.raises(DataFormatError, match=r"toy\.item:3: column 'title' holds 1048577 characters, more than"):
        load_toy(tmp_path)


@pytest.mark.parametrize(
    "value, shown",
    [("true", "bool True"), ("1.5", "float 1.5"), ('{"id": 1}', r"dict \{'id': 1\}"), ("NaN", "float nan")],
)
def test_a_json_id_that_is_not_a_string_or_an_integer_is_refused(tmp_path, value, shown):
    # str() made ids "True", "1.5", '{"id": 1}' and "nan" that matched nothing (or, worse, something)
    items = f'items.jsonl\n{{"item_id": "a", "title": "Alpha"}}\n{{"item_id": {value}, "title": "Beta"}}\n'
    with pytest.raises(
        DataFormatError,
        match=rf"items\.jsonl:2: column 'item_id' must be an id \(a string or an integer\), got {shown}",
    ):
        load_tables(tmp_path, items)


def test_integral_json_ids_are_read_as_their_decimal_text(tmp_path):
    items = 'items.jsonl\n{"item_id": 1, "title": "Alpha"}\n{"item_id": 2.0, "title": "Beta"}\n'
    inter = (
        'inter.jsonl\n{"user_id": 7, "item_id": "1", "timestamp": 1}\n{"user_id": 7, "item_id": 2, "timestamp": 2}\n'
    )
    data = load_tables(tmp_path, items, inter + '{"user_id": 7, "item_id": 1, "timestamp": 3}\n')
    assert data.catalog.item_ids == ["1", "2"] and data.sequences["7"] == ["1", "2", "1"]


@pytest.mark.parametrize("separator", [": ", " : ", "\t:"])  # JSON allows whitespace before the colon
def test_a_json_key_given_twice_is_refused(tmp_path, separator):
    twice = '{"user_id": "u", "item_id"SEP"a", "item_id"SEP"b", "timestamp": 2}'.replace("SEP", separator)
    inter = 'inter.jsonl\n{"user_id": "u", "item_id": "a", "timestamp": 1}\n' + twice + "\n"
    with pytest.raises(DataFormatError, match=r"inter\.jsonl:2: key 'item_id' appears twice in the object"):
        load_tables(tmp_path, "item_id,title\na,Alpha\nb,Beta\n", inter)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"user_id": "u", "item_id": "a", "timestamp": ' + "9" * 5000 + "}", "not valid JSON .*Exceeds the limit"),
        ("[" * 100_000, "not valid JSON .*maximum recursion depth"),
    ],
)
def test_json_python_cannot_parse_names_file_and_line(tmp_path, line, message):
    # these raised a bare ValueError / RecursionError, naming no file
    with pytest.raises(DataFormatError, match=rf"inter\.jsonl:2: {message}"):
        load_tables(
            tmp_path,
            "item_id,title\na,Alpha\n",
            f'inter.jsonl\n{{"user_id": "u", "item_id": "a", "timestamp": 1}}\n{line}\n',
        )


def test_a_json_timestamp_that_is_a_bool_is_refused(tmp_path):
    inter = 'inter.jsonl\n{"user_id": "u", "item_id": "a", "timestamp": true}\n'
    with pytest.raises(DataFormatError, match=r"inter\.jsonl:1: column 'timestamp' must be a number, got bool True"):
        load_tables(tmp_path, "item_id,title\na,Alpha\n", inter)


def test_a_missing_number_is_not_rendered_as_nan_in_an_item_text(tmp_path):
    items = (
        'items.jsonl\n{"item_id": "a", "title": "Alpha", "year": 1995.0}\n'
        '{"item_id": "b", "title": "Beta", "year": NaN}\n'
    )
    with pytest.raises(DataFormatError, match=r"items\.jsonl:2: column 'year' is nan, not a value to render as text"):
        load_tables(tmp_path, items, text_template="{title} ({year})")


def test_parquet_bytes_are_not_rendered_as_text(tmp_path):
    import pyarrow
    import pyarrow.parquet

    table = pyarrow.table({"item_id": ["a", "b"], "title": [b"Alpha", b"Beta"]})
    pyarrow.parquet.write_table(table, tmp_path / "items.parquet")
    (tmp_path / "inter.csv").write_text("user_id,item_id,timestamp\nu,a,1\n")
    with pytest.raises(DataFormatError, match=r"items\.parquet:row 1: column 'title' holds bytes, not text: b'Alpha'"):
        load_interactions_table(str(tmp_path / "inter.csv"), str(tmp_path / "items.parquet"), text_template="{title}")


def test_a_table_without_interactions_names_the_file(tmp_path):
    with pytest.raises(DataFormatError, match=r"inter\.csv: no interactions"):
        load_tables(tmp_path, "item_id,title\na,Alpha\n", "user_id,item_id,timestamp\n\n")


def test_blank_lines_are_skipped_in_every_format(tmp_path):
    data = load_tables(
        tmp_path,
        "item_id,title\n\na,Alpha\n   \nb,Beta\n",
        'inter.jsonl\n{"user_id": "u", "item_id": "a", "timestamp": 1}\n\n  \n'
        '{"user_id": "u", "item_id": "b", "timestamp": 2}\n{"user_id": "u", "item_id": "a", "timestamp": 3}\n',
    )
    assert data.catalog.item_ids == ["a", "b"] and data.sequences["u"] == ["a", "b", "a"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(text_template="{title.upper}"), r"text template '\{title.upper\}': \{title.upper\} is not a column name"),
        (dict(text_template="{title:>999999999}"), r"write \{title\} without a conversion or format spec"),
        (dict(text_template="Movie"), "text template 'Movie' names no column: every item would have the same text"),
        (dict(text_template="{title"), r"text template '\{title' is not a valid template"),
        (dict(text_template=None), "text_template must be a string"),
        (dict(list_fields="genres"), "list_fields must be a list of column names, got 'genres'"),
        (dict(list_separator=""), r"list_separator must be a non-empty string or None \(whitespace\), got ''"),
        (dict(user_column=""), "user_column must be a column name, got ''"),
    ],
)
def test_bad_reader_arguments_are_named_before_any_file_is_read(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_interactions_table(
            str(tmp_path / "nope.csv"), str(tmp_path / "nope.csv"), **{"text_template": "{t}", **kwargs}
        )


def test_a_json_text_over_the_limit_inside_a_nested_object_is_refused(tmp_path):
    # a template naming the column renders the object whole: its texts count against the limit too
    nested = json.dumps({"item_id": "a", "title": "Alpha", "meta": {"notes": "x" * (MAX_FIELD_CHARS + 1)}})
    items = 'items.jsonl\n{"item_id": "b", "title": "Beta"}\n' + nested + "\n"
    with pytest.raises(DataFormatError, match=r"items\.jsonl:2: column 'meta' holds"):
        load_tables(tmp_path, items)
