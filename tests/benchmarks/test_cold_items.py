"""benchmarks/cold_items.py on a tiny cold-item run: its ranks agree with the run's own evaluation, and SASRec's
dumped scores are read in the run's catalog and user order (a dump made of the model's own scores, shuffled as
RecBole orders them, must rank exactly as the model)."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from transformers_iam.experiments import RunArguments, run_experiment

from ..testing_utils import tiny_run_files

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "sasrec"))

import cold_items  # noqa: E402
from export import item_tokens  # noqa: E402


@pytest.fixture(scope="module")
def cold_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cold")
    config = RunArguments.from_preset(None, **tiny_run_files(root), cold_items=0.5, output_dir=str(root / "run"))
    return root, run_experiment(config)


def sasrec_dump_of(run: dict, directory) -> None:
    """What train_score.py writes, made of the model's own scores: RecBole's item ids (padding first, items in
    another order) and its rows (users in another order)."""
    catalog = run["data"].catalog
    tokens = item_tokens(catalog)
    recbole_tokens = ["[PAD]"] + tokens[::-1]
    column_of = {token: column for column, token in enumerate(recbole_tokens)}
    dump = {"item_tokens": recbole_tokens}
    for split, values in run["splits"].items():
        order = list(range(len(values["users"])))[::-1]
        scores = np.full((len(order), len(recbole_tokens)), -1e9, dtype=np.float32)
        for row, user_row in enumerate(order):
            for index, item in enumerate(run["catalog"].item_ids):
                scores[row, column_of[tokens[catalog.index_of(item)]]] = float(values["scores"][user_row, index])
        np.save(directory / f"scores_{split}.npy", scores)
        dump[f"{split}_users"] = [values["users"][row] for row in order]
        targets = run["catalog"].ids_of(values["targets"].tolist())
        dump[f"{split}_targets"] = [tokens[catalog.index_of(targets[row])] for row in order]
    (directory / "sasrec_scores.json").write_text(json.dumps(dump), encoding="utf-8")


def test_cold_items_ranks_as_the_run_and_reads_sasrec_in_its_order(cold_run):
    root, results = cold_run
    checkpoint = str(root / "run" / "checkpoint")
    run = cold_items.model_scores(checkpoint, batch_size=4)
    sasrec_dir = root / "sasrec"
    sasrec_dir.mkdir()
    sasrec_dump_of(run, sasrec_dir)
    report = cold_items.main([checkpoint, "--sasrec", str(sasrec_dir), "--json-out", str(root / "cold.json")])
    # offset 0 is the run's own evaluation of the full catalog
    assert report["offsets"]["test"][0.0]["all"] == pytest.approx(results["test"]["ndcg@10"])
    assert report["offsets"]["valid"][0.0]["all"] == pytest.approx(results["valid"]["ndcg@10"])
    for split in ("valid", "test"):
        shelf = report["new_arrivals"]["every cold item"][split]
        full_ranks = results["ranks"][split]["model"]
        cold_users = [row["user_id"] for row in run["data"].split(split) if row["target"] in run["data"].cold_items]
        assert shelf["users"] == len(cold_users) > 0 and shelf["shelf_items"] == len(run["data"].cold_items)
        # among the cold items a target can only move up; popularity ties every cold item and ranks it last
        assert shelf["median_rank"]["IAM"] <= np.median([full_ranks[user] for user in cold_users])
        assert shelf["median_rank"]["popularity"] == shelf["candidates_median"]
        # SASRec's dump is the model's own scores in RecBole's orders, every item with an id: read back, it ranks
        # as the model, on the same shelf
        with_sasrec = report["new_arrivals"]["cold items SASRec has an id for"][split]
        assert with_sasrec["metrics"]["SASRec"] == with_sasrec["metrics"]["IAM"] == shelf["metrics"]["IAM"]
        # on the whole catalog the run's own cold/warm breakdown, SASRec beside it
        whole = report["whole_catalog"][split]["groups"]
        assert whole["cold"]["users"] == len(cold_users)
        assert whole["cold"]["metrics"]["SASRec"] == whole["cold"]["metrics"]["IAM"]
        assert (
            whole["cold"]["metrics"]["IAM"] == results["breakdown"]["cold"][split]["groups"]["cold"]["metrics"]["model"]
        )
    assert json.loads((root / "cold.json").read_text())["offsets"]["chosen_on_validation"] in cold_items.OFFSETS
