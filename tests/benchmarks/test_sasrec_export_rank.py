"""benchmarks/sasrec/export.py and rank.py on the real ml-100k split, with and without cold items: the files RecBole
reads, and SASRec's ranks computed by our code from a dump shaped as train_score.py writes it (random scores: no
RecBole, no training)."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from transformers_iam.core.catalog import ItemCatalog
from transformers_iam.experiments import RunArguments
from transformers_iam.experiments.report import find_sasrec_reference
from transformers_iam.recsys.metrics import metrics_from_ranks

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "sasrec"))

import export  # noqa: E402
import rank  # noqa: E402


def read_rows(path) -> list[tuple[str, list[str], str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "user_id:token\titem_id_list:token_seq\titem_id:token"
    return [(user, history.split(" "), target) for user, history, target in (line.split("\t") for line in lines[1:])]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("sasrec")
    plain = export.main(["--out", str(root / "plain")])
    cold = export.main(["--cold-items", "0.2", "--seed", "3", "--out", str(root / "cold")])
    return root, plain, cold, export.load_split("ml-100k", 0.2, seed=3)


def test_cold_export_keeps_valid_and_test_rows_and_removes_cold_items_from_training(exports):
    root, plain, cold, data = exports
    folder = os.path.join(cold, "ml-100k-loo")
    for split in ("valid", "test"):  # exactly the rows of the plain split
        with open(os.path.join(plain, "ml-100k-loo", f"ml-100k-loo.{split}.inter"), "rb") as handle:
            plain_bytes = handle.read()
        with open(os.path.join(folder, f"ml-100k-loo.{split}.inter"), "rb") as handle:
            assert handle.read() == plain_bytes, split
    cold_items = set(data.cold_items)
    assert len(cold_items) == round(0.2 * 1682)
    train = read_rows(root / "cold" / "ml-100k-loo" / "ml-100k-loo.train.inter")
    assert len(train) == data.statistics["train_examples"] == len(data.train)
    assert not any(target in cold_items or cold_items.intersection(history) for _, history, target in train)
    assert all(1 <= len(history) <= export.MAX_HISTORY for _, history, _ in train)
    test = read_rows(root / "cold" / "ml-100k-loo" / "ml-100k-loo.test.inter")
    assert (
        sum(target in cold_items for _, _, target in test)
        == data.statistics["cold_items"]["test_users_with_cold_target"]
    )
    assert any(cold_items.intersection(history) for _, history, _ in test)  # cold items stay in test histories
    saved = json.loads((root / "cold" / "cold_items.json").read_text())
    assert saved["items"] == list(data.cold_items) == saved["tokens"]  # ml-100k ids are plain tokens
    assert json.loads((root / "cold" / "split.json").read_text())["cold_items"]["seed"] == 3
    assert "dataset: ml-100k-loo" in (root / "cold" / "sasrec.yaml").read_text()


def test_recbole_reads_history_and_target_as_one_item_vocabulary(exports):
    """Without ``alias_of_item_id`` RecBole numbers the history field apart from the target field, and SASRec embeds
    a history item as another item (1,287 of ml-100k's 1,680 history tokens, checked in RecBole by hand): every
    config export.py writes must share the vocabulary."""
    yaml = pytest.importorskip("yaml")
    root, _, _, _ = exports
    for name in ("plain", "cold"):
        config = yaml.safe_load((root / name / "sasrec.yaml").read_text())
        assert config["alias_of_item_id"] == ["item_id_list"], name
        assert config["ITEM_ID_FIELD"] == "item_id" and "item_id_list" in config["load_col"]["inter"]


def test_item_tokens_are_catalog_indices_when_ids_are_titles():
    titles = ItemCatalog(["Toy Story (1995)", 'Shawshank "Redemption"', "Heat"], ["a", "b", "c"])
    assert export.item_tokens(titles) == ["0", "1", "2"]
    assert export.item_tokens(ItemCatalog(["1", "2"], ["a", "b"])) == ["1", "2"]
    assert export.default_out("ml-1m", 0.2) == "runs/sasrec-ml-1m-cold0.2" and export.default_out("ml-100k", None) == (
        "runs/sasrec"
    )


def fake_dump(out: str, unknown: str) -> None:
    """sasrec_scores.json and scores_*.npy as train_score.py writes them: RecBole's vocabulary is [PAD] then every
    token of the three files (here one item, ``unknown``, is left out of it: an item RecBole never saw)."""
    folder = os.path.join(out, "ml-100k-loo")
    rows = {split: read_rows(_path(folder, split)) for split in ("train", "valid", "test")}
    vocabulary = ["[PAD]"]
    for split_rows in rows.values():
        for _, history, target in split_rows:
            for token in [*history, target]:
                if token not in vocabulary and token != unknown:
                    vocabulary.append(token)
    dumped = {"item_tokens": vocabulary, "recbole_test": {}, "training": {"epochs_run": 1}}
    rng = np.random.default_rng(0)
    for split in ("valid", "test"):
        dumped[f"{split}_users"] = [user for user, _, _ in rows[split]]
        dumped[f"{split}_targets"] = [target for _, _, target in rows[split]]
        np.save(os.path.join(out, f"scores_{split}.npy"), rng.random((len(rows[split]), len(vocabulary)), "float32"))
    with open(os.path.join(out, "sasrec_scores.json"), "w") as handle:
        json.dump(dumped, handle)


def _path(folder: str, split: str):
    from pathlib import Path

    return Path(folder) / f"ml-100k-loo.{split}.inter"


def test_rank_scores_sasrec_on_the_cold_split_and_a_cold_run_finds_it(exports, capsys):
    root, plain, cold, data = exports
    # a cold test target, left out of RecBole's vocabulary to check the -inf path
    unknown = next(row["target"] for row in data.test if row["target"] in data.cold_items)
    fake_dump(cold, unknown)
    results = rank.main(["--cold-items", "0.2", "--seed", "3", "--out", cold])
    printed = capsys.readouterr().out
    # besides it, the cold items that are nobody's target and sit only deeper than the 50 newest items of a
    # validation or test history are in no exported file: RecBole would have no id for them either
    in_files = {
        token
        for split in ("train", "valid", "test")
        for _, history, target in read_rows(_path(os.path.join(cold, "ml-100k-loo"), split))
        for token in [*history, target]
    }
    absent = [item for item in data.catalog.item_ids if item not in in_files or item == unknown]
    assert set(absent) <= set(data.cold_items) and {row["target"] for row in data.test} & set(absent) == {unknown}
    assert f"{len(absent)} catalog items unknown to RecBole (in no exported file) get -inf" in printed
    assert f"cold items: {len(data.cold_items) - len(absent)} of {len(data.cold_items)} have a RecBole id" in printed
    saved = json.loads(open(os.path.join(cold, "sasrec_metrics.json")).read())
    assert saved["dataset"]["cold_items"] == json.loads(json.dumps(data.statistics["cold_items"]))
    for split in ("valid", "test"):
        ranks = saved["ranks"][split]["model"]
        assert len(ranks) == 943 and saved[f"SASRec, {split}"] == pytest.approx(metrics_from_ranks(ranks.values()))
    # a user whose test target is the unknown item: -inf, tied with the excluded history items (also -inf), so the
    # pessimistic rank is the whole catalog
    users = [row["user_id"] for row in data.test if row["target"] == unknown]
    assert users and all(saved["ranks"]["test"]["model"][user] == 1682 for user in users)
    # every other user's rank, by hand from the raw scores: RecBole's columns mapped back to our catalog
    dumped = json.loads(open(os.path.join(cold, "sasrec_scores.json")).read())
    raw = np.load(os.path.join(cold, "scores_test.npy"))
    column = {token: index for index, token in enumerate(dumped["item_tokens"])}
    known = [position for position, target in enumerate(dumped["test_targets"]) if target in column]
    assert len(known) == 943 - len(users)
    for position in (known[0], known[100], known[-1]):
        user, target = dumped["test_users"][position], dumped["test_targets"][position]
        scores = {item: raw[position, column[item]] if item in column else -np.inf for item in data.catalog.item_ids}
        history = set(data.visible_sequences("test")[user]) - {target}
        expected = sum(scores[item] >= scores[target] for item in data.catalog.item_ids if item not in history)
        assert saved["ranks"]["test"]["model"][user] == expected
    assert results["ranks"] == saved["ranks"]
    # the main job's cold run with the same share and seed matches it; a plain run, or another seed, does not
    for seed, cold_items, found in ((3, 0.2, True), (4, 0.2, False), (3, None, False)):
        config = RunArguments.from_preset(
            None, output_dir=str(root / "run"), sasrec_metrics=os.path.join(cold, "sasrec_metrics.json")
        )
        statistics = export.load_split("ml-100k", cold_items, seed).statistics
        reference = find_sasrec_reference(config, statistics, {"valid": ["1"], "test": ["1", "2"]})
        assert (reference is not None) is found, (seed, cold_items)
        if found:
            assert reference["ranks"]["test"] == {user: saved["ranks"]["test"]["model"][user] for user in ("1", "2")}
    with pytest.raises(SystemExit, match="records another split"):
        rank.main(["--cold-items", "0.2", "--seed", "4", "--out", cold])
