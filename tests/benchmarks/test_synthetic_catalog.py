"""benchmarks/synthetic_catalog.py writes a catalog the library reads (deterministic, unique ids and titles, every
interaction on a catalog item, a skewed popularity, series a sequential model can follow), and benchmarks/scaling.py
runs the library end to end on a tiny one and reports every field of its table (its numbers mean nothing here)."""

from __future__ import annotations

import csv
import doctest
import json
import os
import sys
from collections import Counter, defaultdict

import pytest

from transformers_iam.recsys.readers import load_interactions_table

from ..testing_utils import requires_movielens_100k, requires_smollm2

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))

import scaling  # noqa: E402
import synthetic_catalog  # noqa: E402

pytestmark = requires_movielens_100k  # the titles' words and the categories come from MovieLens' catalogs


def read_csv(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    folder = tmp_path_factory.mktemp("catalog")
    summary = synthetic_catalog.generate(folder, num_items=2_000, num_users=400, seed=3)
    return folder, summary, read_csv(folder / "items.csv"), read_csv(folder / "interactions.csv")


def test_docstring_example_runs():
    assert doctest.testmod(synthetic_catalog, raise_on_error=False).failed == 0


def test_deterministic_for_a_seed(tmp_path, catalog):
    folder, summary, _, _ = catalog
    again = synthetic_catalog.generate(tmp_path / "again", num_items=2_000, num_users=400, seed=3)
    assert again == summary
    for name in ("items.csv", "interactions.csv"):
        assert (tmp_path / "again" / name).read_bytes() == (folder / name).read_bytes()
    synthetic_catalog.generate(tmp_path / "other", num_items=2_000, num_users=400, seed=4)
    assert (tmp_path / "other" / "interactions.csv").read_bytes() != (folder / "interactions.csv").read_bytes()
    assert (tmp_path / "other" / "items.csv").read_bytes() != (folder / "items.csv").read_bytes()


def test_ids_titles_and_interactions(catalog):
    _, summary, items, interactions = catalog
    assert list(items[0]) == ["item_id", "title", "category"]
    assert list(interactions[0]) == ["user_id", "item_id", "timestamp"]
    assert len(items) == summary["items"] == 2_000
    assert len({row["item_id"] for row in items}) == len(items)
    assert len({row["title"] for row in items}) == len(items)
    assert all(row["title"] and row["category"] for row in items)
    catalog_ids = {row["item_id"] for row in items}
    assert {row["item_id"] for row in interactions} <= catalog_ids
    assert len(interactions) == summary["interactions"]
    by_user = defaultdict(list)
    for row in interactions:
        by_user[row["user_id"]].append(int(row["timestamp"]))
    assert len(by_user) == summary["users"] == 400
    assert min(len(times) for times in by_user.values()) >= 3  # a leave-one-out split keeps every user
    assert all(times == sorted(times) and len(set(times)) == len(times) for times in by_user.values())


def test_popularity_is_skewed_and_sequences_follow_series(catalog):
    _, _, items, interactions = catalog
    counts = sorted(Counter(row["item_id"] for row in interactions).values(), reverse=True)
    top = len(items) // 100
    assert sum(counts[:top]) / len(interactions) > 0.1  # the top 1% of items hold far more than 1%
    # the next part of a series is the next item id: a user follows one far more often than chance (1 in 2,000)
    follows = sum(
        a["user_id"] == b["user_id"] and int(b["item_id"]) == int(a["item_id"]) + 1
        for a, b in zip(interactions, interactions[1:])
    )
    assert follows / len(interactions) > 0.2


def test_the_library_reads_and_splits_it(catalog):
    folder, summary, items, _ = catalog
    data = load_interactions_table(
        str(folder / "interactions.csv"), str(folder / "items.csv"), text_template="{title} | {category}",
        max_history=20,
    )  # fmt: skip
    assert data.statistics["items"] == summary["items"]
    assert data.statistics["users"] == summary["users"]
    assert data.statistics["interactions"] == summary["interactions"]
    assert len(data.test) == len(data.valid) == summary["users"]
    first = items[0]
    assert data.catalog.text_of(first["item_id"]) == f"{first['title']} | {first['category']}"


def test_the_reasons_a_size_stops():
    assert scaling.broke_line({"broke": {"phase": "evaluation", "error": "RuntimeError: no"}}, 1, "") == (
        "broke in evaluation: RuntimeError: no"
    )
    assert scaling.broke_line({"current_phase": "training"}, -9, "") == (
        "killed by signal 9 (the kernel's OOM killer?) in training"
    )
    assert scaling.broke_line({"done": True}, 0, "") is None
    shape = dict(hidden=576, adapter_hidden=576, id_size=64, num_item_tokens=1, eval_batch=64, train_item_rows=True,
                 sparse_gradients=False)  # fmt: skip
    small, large = (scaling.estimate_memory(n, n // 5, 4 * n, 500, shape) for n in (10_000, 1_000_000))
    assert small["total"] < large["total"] and large["total"] > 10e9  # a million items: gigabytes of tables
    assert sum(large["parts"].values()) == large["total"]
    sparse = scaling.estimate_memory(1_000_000, 200_000, 4_000_000, 500, {**shape, "sparse_gradients": True})
    tables = 1_000_000 * (577 + 64) * 4
    assert sparse["parts"]["item tables x 3"] == 3 * tables and large["parts"]["item tables x 6"] == 6 * tables


@pytest.mark.slow
@requires_smollm2
def test_scaling_runs_a_tiny_catalog_end_to_end(tmp_path, capsys):
    out = tmp_path / "scaling.json"
    rows = scaling.main(
        ["--items", "300", "--users", "60", "--steps", "2", "--eval-users", "12", "--latency-users", "5",
         "--nprobe", "1", "4", "--ml-100k", "--catalog-dir", str(tmp_path / "catalogs"),
         "--work-dir", str(tmp_path / "work"), "--out", str(out)]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert "| items | users | interactions | peak RSS GB (estimate) |" in printed
    reference, row = rows
    # ml-100k's default run, measured the same way: the training rate a large catalog's is compared with
    assert reference["status"] == "ran through" and reference["dataset"] == "ml-100k"
    assert reference["items"] == 1682 and reference["train_targets_per_s"] > 0
    assert "| ml-100k: 1,682 |" in printed
    assert row["status"] == "ran through", row["details"].get("broke")
    for field in ("peak_rss_gb", "cache_items_per_s", "train_targets_per_s", "eval_users_per_s"):
        assert row[field] is not None and row[field] > 0, field
    # the rows from text are read in the item-state cache's pass: no pass of their own
    assert row["text_init_items_per_s"] is None and "item rows from text" not in row["phase_seconds"]
    for method in ("exact", "ivf"):
        assert 0 < row[method]["p50_ms"] <= row[method]["p99_ms"] and row[method]["users"] == 5
    assert 0 <= row["ivf"]["recall@10"] <= 1
    assert [entry["nprobe"] for entry in row["details"]["ivf_sweep"]] == [1, 4] and row["ivf"]["nprobe"] == 1
    # the saved item-state cache is read back, not rebuilt (a rebuild would write its files again)
    assert row["cache_load"]["loaded"] is True and row["cache_load"]["items"] == 300
    assert row["details"]["data"]["items"] == 300 and row["details"]["test_evaluation"]["users"] == 12
    assert json.loads(out.read_text())["rows"][1]["items"] == 300
    assert not os.path.exists(tmp_path / "work" / "run-300")  # the run's folder is removed after its size
