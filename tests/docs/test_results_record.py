"""docs/results.json is the one record of final numbers: every table of results in README.md and docs/results.md is
generated from it and must still match it."""

from __future__ import annotations

import json
import os
import re
import sys

import pytest

from transformers_iam.recsys.record import REQUIRED, load_record, render_table, select, stale_tables, update_tables

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECORD = os.path.join(ROOT, "docs", "results.json")
PAGES = ("README.md", os.path.join("docs", "results.md"))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import record_results  # noqa: E402


def read(name: str) -> str:
    with open(os.path.join(ROOT, name), encoding="utf-8") as handle:
        return handle.read()


def test_every_entry_has_the_fields_of_the_record():
    record = load_record(RECORD)  # checks each entry
    assert record and all(all(field in entry for field in REQUIRED) for entry in record)
    for entry in record:
        if entry["model"].startswith("SASRec"):  # a baseline trained to a stopping rule says whether it got there
            assert isinstance(entry["converged"], bool) and entry["epochs"] >= 1, entry["model"]


@pytest.mark.parametrize("page", PAGES)
def test_every_results_table_matches_the_record(page):
    text = read(page)
    assert "<!-- results-table" in text, f"{page} has no generated table"
    assert stale_tables(text, load_record(RECORD)) == [], (
        f"{page}: run `python benchmarks/record_results.py update README.md docs/results.md`"
    )


def test_readme_has_one_headline_table_per_data_set_with_iam_sasrec_the_plain_llm_and_popularity():
    record = load_record(RECORD)
    readme = read("README.md")
    for dataset in sorted({entry["dataset"] for entry in record if entry.get("headline")}):
        assert f"<!-- results-table dataset={dataset} headline=true -->" in readme, dataset
        models = [entry["model"] for entry in select(record, f"dataset={dataset} headline=true")]
        assert any(model.startswith("IAM") for model in models), dataset
        for baseline in ("SASRec", "same LLM without IAM", "popularity"):
            assert any(model.startswith(baseline) for model in models), (dataset, baseline)


def test_a_changed_number_is_caught_and_regenerated():
    record = load_record(RECORD)
    text = read("README.md")
    changed = [dict(entry) for entry in record]
    changed[0]["ndcg@10"] = round(changed[0]["ndcg@10"] + 0.0001, 4)
    assert stale_tables(text, changed)  # the README no longer matches the record it would need
    assert stale_tables(update_tables(text, changed), changed) == []


def test_the_readme_table_shows_each_rows_number_from_the_record():
    record = load_record(RECORD)
    table = render_table(record, "dataset=ml-100k headline=true")
    for entry in select(record, "dataset=ml-100k headline=true"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {entry['model']}"))
        assert re.search(rf"\| {entry['ndcg@10']:.4f} \|", row)


def test_a_run_s_popularity_ranks_are_recorded_as_their_own_rows(tmp_path):
    ranks = {"model": {"u1": 1, "u2": 30}, "popularity": {"u1": 12, "u2": 3}}
    run = {"config": {"command": "python examples/finetune.py"}, "ranks": {"test": ranks, "valid": ranks}}
    (tmp_path / "metrics.json").write_text(json.dumps(run))
    record = tmp_path / "results.json"
    record.write_text("[]")
    for model, ranker in (("IAM", "model"), ("popularity", "popularity")):
        arguments = ["--record", str(record), "add", str(tmp_path), "--dataset", "d", "--model", model]
        assert record_results.main([*arguments, "--ranker", ranker]) == 0
    rows = {(entry["model"], entry["split"]): entry for entry in json.loads(record.read_text())}
    assert rows["IAM", "test"]["hr@10"] == 0.5 and rows["popularity", "test"]["hr@10"] == 0.5
    assert rows["IAM", "test"]["ndcg@10"] == 0.5 and rows["popularity", "test"]["ndcg@10"] == 0.25
    with pytest.raises(SystemExit, match="no 'sasrec' ranks for test"):
        record_results.main(["--record", str(record), "add", str(tmp_path), "--dataset", "d", "--model", "x",
                             "--ranker", "sasrec"])  # fmt: skip


def test_a_scaling_run_becomes_one_synthetic_data_set_per_size(tmp_path):
    costs = dict(peak_rss_gb=2.0, text_init_items_per_s=300.0, cache_items_per_s=500.0, train_targets_per_s=1600.0,
                 eval_users_per_s=40.0, phase_seconds={"training": 16.5})  # fmt: skip
    latency = {"p50_ms": 25.0, "p99_ms": 28.0}
    row = dict(items=100_000, users=20_000, interactions=400_000, status="ran through", exact=latency,
               ivf={**latency, "recall@10": 0.88}, details={"metrics": {split: {"ndcg@10": 0.02, "hr@10": 0.04,
               "users": 500} for split in ("valid", "test")}, "user_state": {"p50_ms": 11.24, "p99_ms": 14.16}},
               **costs)  # fmt: skip
    broken = {**row, "items": 1_000_000, "status": "broke in training: MemoryError"}
    reference = {**row, "items": 1682, "dataset": "ml-100k", "train_targets_per_s": 3400.0}  # not an entry
    (tmp_path / "scaling.json").write_text(json.dumps({"rows": [reference, row, broken]}))
    record = tmp_path / "results.json"
    record.write_text("[]")
    arguments = ["--record", str(record), "add", str(tmp_path / "scaling.json"), "--model", "IAM", "--command", "c"]
    assert record_results.main(arguments) == 0
    entries = json.loads(record.read_text())
    assert {(entry["dataset"], entry["split"]) for entry in entries} == {("synthetic-100k", "test"),
                                                                       ("synthetic-100k", "valid")}  # fmt: skip
    assert entries[0]["scaling"]["train_targets_per_s"] == 1600.0 and entries[0]["scaling"]["ivf_recall@10"] == 0.88
    assert entries[0]["scaling"]["ml-100k_train_targets_per_s"] == 3400.0
    # the user's forward alone, beside the indexed call it is part of
    assert (entries[0]["scaling"]["user_state_p50_ms"], entries[0]["scaling"]["user_state_p99_ms"]) == (11.2, 14.2)


def test_a_command_with_a_pipe_stays_in_its_cell():
    entry = {
        "dataset": "d", "model": "m", "split": "test", "targets": "all", "users": 3, "ndcg@10": 0.1, "hr@10": 0.2,
        "command": "python examples/finetune.py --text_template '{title} | {author}'", "date": "2026-12-07",
        "machine": "x86_64",
    }  # fmt: skip
    row = render_table([entry], "dataset=d").splitlines()[-1]
    # a markdown row splits on every unescaped pipe, code spans included: six cells, the command whole in the last
    assert len(re.split(r"(?<!\\)\|", row.strip("|"))) == 6
    assert row.endswith("`python examples/finetune.py --text_template '{title} \\| {author}'` |")


@pytest.mark.parametrize(
    "command, cell",
    [
        ("echo `date`", "`` echo `date` ``"),  # a fence of two, spaced: the span ends with a backtick
        ("a ``b`` c", "```a ``b`` c```"),
    ],
)
def test_a_command_with_backticks_stays_one_code_span(command, cell):
    entry = {
        "dataset": "d", "model": "m", "split": "test", "targets": "all", "users": 3, "ndcg@10": 0.1, "hr@10": 0.2,
        "command": command, "date": "2026-12-07", "machine": "x86_64",
    }  # fmt: skip
    assert render_table([entry], "dataset=d").splitlines()[-1].endswith(f"| {cell} |")
