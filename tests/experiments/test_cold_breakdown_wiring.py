"""The run side of the cold-item protocol that exists so far: the breakdowns run.py writes for a run with cold
items, the report's section for them, and the main job refusing cold_items until the model side is wired."""

from __future__ import annotations

import pytest

from transformers_iam import ItemCatalog
from transformers_iam.experiments import ExperimentConfig, run_experiment
from transformers_iam.experiments.report import breakdown_section
from transformers_iam.experiments.run import breakdowns
from transformers_iam.recsys.baselines import evaluate_popularity
from transformers_iam.recsys.split import Interaction, leave_one_out


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


def test_the_main_job_refuses_cold_items_until_the_model_side_is_wired(tmp_path):
    with pytest.raises(NotImplementedError, match="cannot run the cold-item protocol yet"):
        run_experiment(ExperimentConfig(cold_items=0.2, output_dir=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()  # refused before anything is written or loaded
