"""The run side of the cold-item protocol that exists so far: the breakdowns run.py writes for a run with cold
items, the report's section for them, and the main job training on the warm catalog, then adding the cold items;
and a run's item-state cache, saved in its folder and read back when the checkpoint is evaluated again."""

from __future__ import annotations

import pytest

from transformers_iam import IAMForCausalRecommendation, ItemCatalog
from transformers_iam.experiments import RunArguments, evaluate_checkpoint, run_experiment
from transformers_iam.experiments.build import load_data
from transformers_iam.experiments.report import breakdown_section
from transformers_iam.experiments.run import breakdowns
from transformers_iam.recsys.baselines import evaluate_popularity
from transformers_iam.recsys.data import Interaction
from transformers_iam.recsys.split import leave_one_out

from ..testing_utils import tiny_run_files


def test_a_run_with_cold_items_gets_cold_and_long_tail_breakdowns_and_a_report_section():
    catalog = ItemCatalog([f"i{n}" for n in range(20)], [f"item {n}" for n in range(20)])
    rows = [
        Interaction(f"u{user}", f"i{(user * 3 + step) % 20}", float(step), f"row {user}.{step}")
        for user in range(30)
        for step in range(8)
    ]
    data = leave_one_out(rows, catalog, cold_items=0.25, seed=1)
    cold = set(data.cold_items)
    ranks = {}
    for split in ("valid", "test"):
        _, popularity = evaluate_popularity(data, split, True, return_ranks=True)
        # a model that ranks warm targets first and cold targets 15th
        model = {row["user_id"]: 15 if row["target"] in cold else 1 for row in data.split(split)}
        ranks[split] = {"model": model, "popularity": popularity}
    result = breakdowns(data, ranks, {"valid": data.valid, "test": data.test}, seed=0)
    for split in ("valid", "test"):
        groups = result["cold"][split]["groups"]
        cold_users = sum(row["target"] in cold for row in data.split(split))
        assert groups["cold"]["users"] == cold_users > 0 and groups["warm"]["users"] == 30 - cold_users
        assert (
            groups["cold"]["metrics"]["model"]["median_rank"] == 15 and groups["warm"]["metrics"]["model"]["hr@10"] == 1
        )
        # popularity knows nothing of cold items: they count 0 and land at the bottom
        assert groups["cold"]["metrics"]["popularity"]["hr@10"] == 0
        assert result["long_tail"][split]["groups"]["unseen"]["users"] >= cold_users
    lines = "\n".join(breakdown_section(result, {"model": "IAM"}))
    assert "## Cold items (test)" in lines and "| ranker (cold targets) | users | median rank |" in lines
    assert "| IAM | " in lines and "| IAM - popularity HR@10 [95% interval] |" in lines


def test_the_main_job_trains_on_warm_items_then_adds_the_cold_ones(tmp_path):
    config = RunArguments.from_preset(
        None, **tiny_run_files(tmp_path), cold_items=0.25, output_dir=str(tmp_path / "run")
    )
    results = run_experiment(config)
    data = load_data(config)
    model = IAMForCausalRecommendation.from_pretrained(tmp_path / "run" / "checkpoint")
    # trained on the warm catalog, the cold items appended after training: every item scored at the end
    assert len(data.cold_items) == 3 and model.config.num_items == 12 and len(model.catalog) == 12
    assert model.catalog.item_ids == data.warm_catalog.item_ids + list(data.cold_items)
    assert model.catalog == data.catalog_after_training
    # selected on the users with a warm validation target; validation and test then ranked for every user
    assert (
        results["selection"]["users"] == len(data.warm_valid)
        and results["valid"]["users"] == results["test"]["users"] == 10
    )
    assert set(results["breakdown"]["cold"]) == {"valid", "test"}
    assert "cold-item protocol" in (tmp_path / "run" / "report.md").read_text()
    # the saved checkpoint evaluates again to the run's own numbers, cold items included
    again = evaluate_checkpoint(str(tmp_path / "run" / "checkpoint"), "test")
    assert again["ndcg@10"] == pytest.approx(results["test"]["ndcg@10"]) and again["users"] == 10


def forbid_item_cache_rebuild(monkeypatch) -> None:
    """From here on, a saved item-state cache that fits must be loaded: computing every item's states fails the test."""
    from transformers_iam.core import item_cache_lifecycle

    def no_rebuild(*args, **kwargs):
        raise AssertionError("a saved item-state cache fits: it must be loaded, not rebuilt")

    monkeypatch.setattr(item_cache_lifecycle, "build_item_cache", no_rebuild)


@pytest.mark.parametrize("cold_items", [None, 0.25], ids=["warm", "cold-items-added"])
def test_a_run_saves_its_item_state_cache_and_a_re_evaluation_loads_it(tmp_path, monkeypatch, cold_items):
    files = tiny_run_files(tmp_path)
    config = RunArguments.from_preset(
        None,
        **{**files, "freeze_bottom_layers": 1},
        freeze_embeddings=True,
        cold_items=cold_items,
        output_dir=str(tmp_path / "run"),
    )
    results = run_experiment(config)
    assert results["model"]["item_cache"]
    assert (tmp_path / "run" / "item_cache" / "item_cache.json").is_file()

    # under the cold-item protocol the checkpoint holds the items added after training: so must the saved cache
    forbid_item_cache_rebuild(monkeypatch)
    again = evaluate_checkpoint(str(tmp_path / "run" / "checkpoint"), "test")
    assert again["ndcg@10"] == pytest.approx(results["test"]["ndcg@10"])


def test_a_cache_shared_between_cold_item_runs_keeps_the_catalog_they_start_from(tmp_path, monkeypatch):
    files = tiny_run_files(tmp_path)
    shared = tmp_path / "shared-item-cache"

    def arguments(name: str) -> RunArguments:
        return RunArguments.from_preset(
            None,
            **{**files, "freeze_bottom_layers": 1},
            freeze_embeddings=True,
            cold_items=0.25,
            item_cache_dir=str(shared),
            output_dir=str(tmp_path / name),
        )

    first = run_experiment(arguments("first"))
    forbid_item_cache_rebuild(monkeypatch)
    # the checkpoint's cache (its catalog grown by add_items) is in the run's own folder, and a re-evaluation reads it
    assert (tmp_path / "first" / "item_cache" / "item_cache.json").is_file()
    again = evaluate_checkpoint(str(tmp_path / "first" / "checkpoint"), "test")
    assert again["ndcg@10"] == pytest.approx(first["test"]["ndcg@10"])
    # the shared cache still holds the warm catalog a run starts from: the next run loads it instead of rebuilding
    second = run_experiment(arguments("second"))
    assert second["test"]["users"] == first["test"]["users"]
