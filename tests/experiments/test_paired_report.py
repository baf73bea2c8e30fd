"""Per-user ranks in metrics.json, the popularity sentence and figure of the report, the paired-comparison script and
the results table (a tiny random backbone: one run of seconds)."""

from __future__ import annotations

import itertools
import json
import os
import sys

import pytest

from transformers_iam.core.configuration_iam import layer_types_for_layout
from transformers_iam.experiments import RunArguments, run_experiment
from transformers_iam.experiments.plots import plot_validation
from transformers_iam.experiments.presets import PRESETS
from transformers_iam.recsys.metrics import metrics_from_ranks

from ..testing_utils import tiny_run_files

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))

import paired as paired_script  # noqa: E402
import results_table  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    files = tiny_run_files(root)
    # a SASRec reference beside the run, with per-user ranks: the run draws it over its own users
    sasrec_dir = root / "sasrec"
    sasrec_dir.mkdir()
    users = [f"u{i}" for i in range(10)]
    sasrec = {
        "SASRec, valid": metrics_from_ranks([1] * 10),
        "SASRec, test": metrics_from_ranks([3] * 10),
        "dataset": None,  # filled below from the run's own statistics
        "training": {"epochs_run": 17, "best_epoch": 6, "stopping_step": 10, "train_seconds": 120.0},
        "ranks": {split: {"model": {user: rank for user in users}} for split, rank in (("valid", 1), ("test", 3))},
    }
    config = RunArguments.from_preset("cpu-quick", output_dir=str(root / "tiny"), **{**files, "evaluations": 5})
    from transformers_iam.experiments.build import load_data

    sasrec["dataset"] = load_data(config).statistics
    (sasrec_dir / "sasrec_metrics.json").write_text(json.dumps(sasrec))
    return root, run_experiment(config)


def test_metrics_json_keeps_every_users_rank_for_model_and_popularity(tiny_run):
    root, results = tiny_run
    saved = json.loads((root / "tiny" / "metrics.json").read_text())
    users = {f"u{i}" for i in range(10)}
    for split in ("valid", "test"):
        for which in ("model", "popularity"):
            ranks = saved["ranks"][split][which]
            assert set(ranks) == users and all(isinstance(rank, int) and rank >= 1 for rank in ranks.values())
        # the kept ranks are the ones the reported metrics came from
        model_metrics = metrics_from_ranks(list(saved["ranks"][split]["model"].values()))
        assert model_metrics["ndcg@10"] == pytest.approx(saved[split]["ndcg@10"])
        popularity_metrics = metrics_from_ranks(list(saved["ranks"][split]["popularity"].values()))
        assert popularity_metrics == pytest.approx(saved["popularity"][split])
        assert saved["paired_vs_popularity"][split]["ndcg@10"]["users"] == 10
    assert saved["peak_rss_mib"] > 0 and len(saved["validation_curve"]) >= 5
    assert saved["sasrec"]["test"]["ndcg@10"] == pytest.approx(0.5)  # rank 3 for every user


def test_report_names_the_comparison_with_popularity_and_the_figure_is_written(tiny_run):
    root, results = tiny_run
    report = (root / "tiny" / "report.md").read_text()
    assert " NDCG@10 over popularity on test (" in report
    assert "95% paired bootstrap interval of the relative difference [" in report
    assert "SASRec on the same split" in report and "peak RSS" in report
    assert os.path.getsize(root / "tiny" / "validation_ndcg10.png") > 10_000


def test_paired_script_compares_a_run_with_its_popularity_and_with_itself(tiny_run, capsys):
    root, results = tiny_run
    path = str(root / "tiny" / "metrics.json")
    rows = paired_script.main([path, "--resamples", "200"])
    assert list(rows) == ["tiny vs popularity (tiny), NDCG@10", "tiny vs popularity (tiny), HR@10"]
    assert rows["tiny vs popularity (tiny), NDCG@10"].difference == pytest.approx(
        results["test"]["ndcg@10"] - results["popularity"]["test"]["ndcg@10"]
    )
    assert "test split; paired over the same users" in capsys.readouterr().out
    same = paired_script.compare(path, path, split="valid")
    assert all(r.difference == 0 and r.interval == (0.0, 0.0) and r.p_value == 1.0 for r in same.values())
    sasrec = paired_script.compare(str(root / "sasrec" / "sasrec_metrics.json"), f"{path}:popularity")
    assert next(iter(sasrec.values())).users == 10


def test_results_table_shows_new_fields_and_reads_older_metrics(tiny_run, tmp_path):
    root, results = tiny_run
    text = results_table.main([str(root)])
    assert "SASRec (RecBole 1.2.1, 17 epochs)" in text and "epoch 6" in text and "MiB RSS" in text
    assert "17 epochs (early stopping, patience 10)" in text
    assert "| 6 steps |" in text  # a budgeted run (--max_steps) is as long as its steps, whatever its epochs say
    # a metrics.json from before this change: no ranks, no paired comparison, no peak memory
    old = {key: value for key, value in results.items() if key not in ("ranks", "paired_vs_popularity", "sasrec")}
    old.pop("peak_rss_mib")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.json").write_text(json.dumps(old))
    assert "IAM stacked" in results_table.main([str(tmp_path)])
    old["config"]["training"]["max_steps"] = -1
    (tmp_path / "old" / "metrics.json").write_text(json.dumps(old))
    assert f"| {old['config']['training']['num_train_epochs']} epochs |" in results_table.main([str(tmp_path)])


def test_the_figure_takes_many_points_and_a_run_without_logged_loss(tmp_path):
    log = [{"step": step, "eval_ndcg@10": 0.03 + step * 1e-5} for step in range(0, 400, 10)]
    log += [{"step": step, "loss": 7 - step / 100} for step in range(5, 400, 5)]
    plot_validation(log, str(tmp_path / "many.png"), reference={"popularity": 0.034, "SASRec": 0.10})
    plot_validation(log[:2], str(tmp_path / "few.png"))
    assert (tmp_path / "many.png").is_file() and (tmp_path / "few.png").is_file()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_gives_a_curve_of_at_least_four_points(preset, tmp_path):
    training = RunArguments.from_preset(preset, output_dir=str(tmp_path)).training
    assert training.evaluations + training.eval_on_start >= 4  # a CPU validation pass costs ~75 s
    args = training.for_run(num_train_examples=5000)
    assert args.eval_steps == args.save_steps


@pytest.mark.parametrize("preset", ["cpu-quick", "cpu-full"])
def test_cpu_presets_are_item_level_over_a_cached_frozen_intra_half(preset):
    # what the presets promise a user: the exact item-state cache applies (its frozen bottom covers the leading intra
    # run, embeddings frozen), the layers above read one state per item plus its id vector, every window of every
    # user is trained on, and cpu-full trains longer than the default
    run = RunArguments.from_preset(preset)
    model = run.model
    layers = model.num_backbone_layers
    kinds = model.layer_types(layers) or layer_types_for_layout(model.iam_layout, layers)
    assert "inter" in kinds[model.freeze_bottom_layers :]
    leading_intra = len(list(itertools.takewhile(lambda kind: kind == "intra", kinds)))
    assert 0 < leading_intra <= model.freeze_bottom_layers
    assert model.item_cache and model.freeze_embeddings and model.supervision == "every_item"
    assert model.num_item_tokens == 1 and model.use_item_id_embeddings
    assert run.data.train_examples_per_user is None
    if preset == "cpu-full":
        assert run.training.num_train_epochs > RunArguments.from_preset("cpu-quick").training.num_train_epochs


def test_results_table_keeps_two_runs_of_one_configuration_apart(tiny_run, tmp_path):
    _, results = tiny_run
    for folder, ndcg in (("first", 0.0123), ("second", 0.0456)):
        (tmp_path / folder).mkdir()
        copy = {**results, "test": {**results["test"], "ndcg@10": ndcg}}
        (tmp_path / folder / "metrics.json").write_text(json.dumps(copy))
    text = results_table.main([str(tmp_path)])
    assert "0.0123" in text and "0.0456" in text and "ids (second)" in text and "ids (first)" in text


def test_every_run_breaks_its_ranks_down_by_how_popular_the_target_is(tiny_run):
    from transformers_iam.experiments.build import load_data
    from transformers_iam.recsys.breakdown import popularity_groups

    root, results = tiny_run
    saved = json.loads((root / "tiny" / "metrics.json").read_text())
    assert "cold" not in saved["breakdown"]  # no cold items in this run
    data = load_data(RunArguments.from_dict(saved["config"]))
    item_group = popularity_groups(data.training_counts(), data.catalog.item_ids)
    for split in ("valid", "test"):
        breakdown = saved["breakdown"]["long_tail"][split]
        targets = dict(zip(data.split(split)["user_id"], data.split(split)["target"]))
        sasrec = saved["sasrec"]["ranks"][split]  # SASRec's ranks on the run's users, kept for the breakdown
        assert sasrec == {f"u{i}": 1 if split == "valid" else 3 for i in range(10)}
        for group, entry in breakdown["groups"].items():
            users = [user for user, target in targets.items() if item_group[target] == group]
            assert entry["users"] == len(users)
            if users:
                for ranker, ranks in (("model", saved["ranks"][split]["model"]), ("SASRec", sasrec)):
                    expected = metrics_from_ranks([ranks[user] for user in users])["ndcg@10"]
                    assert entry["metrics"][ranker]["ndcg@10"] == pytest.approx(expected)
                assert set(entry["paired"]) == {"model", "SASRec"}  # each against popularity
    report = (root / "tiny" / "report.md").read_text()
    assert (
        "## The long tail (test)" in report
        and "| item-level IAM stacked + item ids - popularity NDCG@10 [95% interval] |" in report
    )
    assert "| SASRec NDCG@10 |" in report and "## Cold items" not in report


def test_results_table_says_when_a_sasrec_wall_is_only_its_scoring(tiny_run, tmp_path):
    root, _ = tiny_run
    sasrec = json.loads((root / "sasrec" / "sasrec_metrics.json").read_text())
    sasrec["training"] = {"best_epoch": 11, "wall_seconds": 7.0, "interrupted": "scored from a saved epoch"}
    (tmp_path / "sasrec-scored").mkdir()
    (tmp_path / "sasrec-scored" / "sasrec_metrics.json").write_text(json.dumps(sasrec))
    assert "| 0.1 min (scoring a saved checkpoint only) |" in results_table.main([str(tmp_path / "sasrec-scored")])
