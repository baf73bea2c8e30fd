"""Bring your own data as a user has it: MovieLens' ratings.csv / movies.csv shapes (userId, movieId, |-separated
genres) as CSV, JSONL and Parquet, through the main job's flags, end to end; a bad row is one line, no traceback."""

from __future__ import annotations

import csv
import json
import os
import re
import sys

import pyarrow
import pyarrow.parquet
import pytest

from transformers_iam.experiments.build import load_data

from ..testing_utils import tiny_run_files

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))

import finetune  # noqa: E402

MOVIES = [
    (1, "Toy Story (1995)", "Adventure|Animation|Children|Comedy|Fantasy"),
    (2, "Jumanji (1995)", "Adventure|Children|Fantasy"),
    (11, "American President, The (1995)", "Comedy|Drama|Romance"),  # a comma inside a quoted CSV field
    (6, "Heat (1995)", "Action|Crime|Thriller"),
    (4, "Waiting to Exhale (1995)", "(no genres listed)"),
]
# (userId, movieId, rating, timestamp): user 2 has two ratings at one second, kept in file order
RATINGS = [
    (1, 1, 4.0, 964982703),
    (1, 11, 4.0, 964981247),
    (1, 6, 4.5, 964982224),
    (1, 2, 5.0, 964983815),
    (2, 6, 3.0, 1445714835),
    (2, 1, 4.0, 1445714835),
    (2, 4, 2.5, 1445715000),
    (2, 2, 3.5, 1445715100),
    (3, 2, 3.0, 1306463578),
    (3, 4, 1.0, 1306463600),
    (3, 11, 2.0, 1306464000),
]
FLAGS = [
    "--user-column",
    "userId",
    "--item-column",
    "movieId",
    "--catalog-item-column",
    "movieId",
    "--text-template",
    "{title} | {genres}",
    "--list-fields",
    "genres",
    "--list-separator",
    "|",
]


def write_movielens(folder, fmt: str, ratings=RATINGS) -> tuple[str, str]:
    """ratings.<fmt> and movies.<fmt> as MovieLens ships them (CSV), or the same columns as JSONL or Parquet
    (Parquet's genres a list column, as a pandas user would write it)."""
    ratings_path, movies_path = os.path.join(folder, f"ratings.{fmt}"), os.path.join(folder, f"movies.{fmt}")
    rating_rows = [dict(zip(("userId", "movieId", "rating", "timestamp"), row)) for row in ratings]
    movie_rows = [dict(zip(("movieId", "title", "genres"), row)) for row in MOVIES]
    if fmt == "csv":
        for path, rows in ((ratings_path, rating_rows), (movies_path, movie_rows)):
            with open(path, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
    elif fmt == "jsonl":
        for path, rows in ((ratings_path, rating_rows), (movies_path, movie_rows)):
            with open(path, "w", encoding="utf-8") as handle:
                handle.write("".join(json.dumps(row) + "\n" for row in rows))
    else:
        pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rating_rows), ratings_path)
        listed = [{**row, "genres": row["genres"].split("|")} for row in movie_rows]
        pyarrow.parquet.write_table(pyarrow.Table.from_pylist(listed), movies_path)
    return ratings_path, movies_path


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_movielens_shaped_tables_in_every_format_give_the_same_split(tmp_path, fmt):
    ratings, movies = write_movielens(tmp_path, fmt)
    config = finetune.parse_args(
        ["--interactions-file", ratings, "--catalog-file", movies, *FLAGS, "--output-dir", str(tmp_path / "run")]
    )
    data = load_data(config)
    assert data.catalog.item_ids == ["1", "2", "11", "6", "4"]  # JSON and Parquet ints are the ids' text
    assert data.catalog.text_of("1") == "Toy Story (1995) | Adventure, Animation, Children, Comedy, Fantasy"
    assert data.catalog.text_of("11") == "American President, The (1995) | Comedy, Drama, Romance"
    assert data.catalog.text_of("4") == "Waiting to Exhale (1995) | (no genres listed)"
    assert data.sequences == {"1": ["11", "6", "1", "2"], "2": ["6", "1", "4", "2"], "3": ["2", "4", "11"]}
    assert data.statistics["timestamp_ties"] == 2
    assert data.test.to_list()[1] == {"user_id": "2", "history": ["6", "1", "4"], "target": "2"}


def test_the_main_job_runs_end_to_end_on_ratings_and_movies(tmp_path):
    files = tiny_run_files(tmp_path)  # only its tiny backbone and word tokenizer are used
    ratings, movies = write_movielens(tmp_path, "csv")
    output = tmp_path / "run"
    argv = ["--interactions-file", ratings, "--catalog-file", movies, *FLAGS, "--backbone", files["backbone"]]
    argv += ["--num-backbone-layers", "2", "--freeze-bottom-layers", "0", "--max-steps", "2"]
    argv += ["--per-device-train-batch-size", "2"]
    assert finetune.cli([*argv, "--evaluations", "1", "--output-dir", str(output)]) == 0
    saved = json.loads((output / "metrics.json").read_text())
    assert saved["dataset"]["users"] == 3 and saved["test"]["users"] == 3
    assert set(saved["breakdown"]["long_tail"]["test"]["groups"]) == {"head", "torso", "tail", "unseen"}
    assert "## The long tail (test)" in (output / "report.md").read_text()
    catalog = json.loads((output / "checkpoint" / "item_catalog.json").read_text())["items"]
    assert catalog[2]["text"] == "American President, The (1995) | Comedy, Drama, Romance"


def run_cli(argv, capsys) -> tuple[int, str]:
    code = finetune.cli(argv)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    "fmt, bad_row, message",
    [
        ("csv", 4, r"ratings\.csv:6: column 'timestamp' must be a number, got 'soon'"),  # line 1 is the header
        ("jsonl", 2, r"ratings\.jsonl:3: column 'timestamp' must be a number, got 'soon'"),
        ("parquet", 6, r"ratings\.parquet:row 7: column 'timestamp' must be a number, got 'soon'"),
    ],
)
def test_a_bad_row_is_one_line_naming_file_line_and_column(tmp_path, capsys, fmt, bad_row, message):
    ratings = [tuple(str(value) for value in row) for row in RATINGS]  # text timestamps: one can be 'soon'
    ratings[bad_row] = (*ratings[bad_row][:3], "soon")
    ratings_path, movies_path = write_movielens(tmp_path, fmt, ratings)
    argv = ["--interactions-file", ratings_path, "--catalog-file", movies_path, *FLAGS]
    code, err = run_cli([*argv, "--output-dir", str(tmp_path / "run")], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: ") and re.search(message, err)


def test_what_a_new_user_first_tries_is_told_how_to_fix_it(tmp_path, capsys):
    ratings, movies = write_movielens(tmp_path, "csv")
    argv = ["--interactions-file", ratings, "--catalog-file", movies, "--text-template", "{title} | {genres}"]
    code, err = run_cli([*argv, "--output-dir", str(tmp_path / "run")], capsys)
    assert code == 2 and "Traceback" not in err
    assert err == (
        f"error: {movies}:1: missing required column 'item_id' (header has ['movieId', 'title', 'genres']); name "
        "your columns with --user_column, --item_column, --time_column, --catalog_item_column\n"
    )
    flags = ["--catalog-item-column", "movieId", "--user-column", "userId"]
    code, err = run_cli([*argv, *flags, "--output-dir", str(tmp_path / "run2")], capsys)
    assert code == 2 and "ratings.csv:1: missing required column 'item_id' (header has ['userId', 'movieId'" in err
    argv = ["--interactions-file", "nope.csv", "--catalog-file", movies, *FLAGS]
    code, err = run_cli([*argv, "--output-dir", str(tmp_path / "run3")], capsys)
    assert (code, err) == (2, "error: nope.csv not found\n")
    # an item the catalog does not have, in a JSONL file: named with its file, line and user
    ratings_path, movies_path = write_movielens(tmp_path, "jsonl", [*RATINGS, (3, 99, 4.0, 1306464100)])
    argv = ["--interactions-file", ratings_path, "--catalog-file", movies_path, *FLAGS, "--output-dir", str(tmp_path)]
    code, err = run_cli(argv, capsys)
    assert code == 2 and f"{ratings_path}:12: user '3' interacted with item '99', which is not in the catalog" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--user-column", "userId"], r"user_column names a column of a plain table"),
        (["--dataset", "ml-1m", "--dataset-dir", "x"], "choose one data source: dataset and dataset_dir"),
        (["--list-separator", "|"], r"list_fields and list_separator describe your own catalog"),
        (["--cold_items", "1.5"], r"cold_items must be a share in \(0, 1\)"),
        (["--cold_item_pattern", "(2000"], r"cold_item_pattern '\(2000' is not a regular expression"),
        (["--cold_item_pattern", "2000", "--cold_items", "0.2"], "choose one"),
        (["--dataset", "ml-20m"], "invalid choice: 'ml-20m'"),
    ],
)
def test_data_flags_that_would_be_ignored_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        finetune.parse_args(argv)
    assert exit_info.value.code == 2 and re.search(message, capsys.readouterr().err)


def test_runs_on_another_data_set_get_their_own_folder_and_sasrec_reference():
    from transformers_iam.experiments.report import sasrec_metrics_path

    config = finetune.parse_args(["--dataset", "ml-1m", "--cold-items", "0.2"])
    assert config.training.output_dir == "runs/cpu-quick-stacked-ml-1m-cold0.2"
    assert sasrec_metrics_path(config).endswith(os.path.join("runs", "sasrec-ml-1m-cold0.2", "sasrec_metrics.json"))
    assert finetune.parse_args([]).training.output_dir == "runs/cpu-quick-stacked"
    new_arrivals = finetune.parse_args(["--dataset", "ml-1m", "--cold_item_pattern", r"\(2000\) \|"])
    assert new_arrivals.training.output_dir == "runs/cpu-quick-stacked-ml-1m-new-arrivals"
