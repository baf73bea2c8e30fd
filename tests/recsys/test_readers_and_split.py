"""Data loaders: the leave-one-out split on ml-100k and on plain tables, and their errors."""

from __future__ import annotations

import codecs
import json

import pytest

from transformers_iam.recsys.baselines import evaluate_popularity
from transformers_iam.recsys.data import DataFormatError
from transformers_iam.recsys.readers import load_interactions_table, load_recbole_atomic, movielens_100k_directory

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
