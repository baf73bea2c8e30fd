"""The main job end to end on real data (ml-100k) and the real LLM (SmolLM2 GGUF), shrunk to a smoke run."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from transformers import AutoModel

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))

import evaluate_checkpoint as evaluate_script  # noqa: E402
import finetune  # noqa: E402
import finetune_trl  # noqa: E402

from transformers_iam import IAMForCausalRecommendation  # noqa: E402

from ..testing_utils import requires_movielens_100k, requires_smollm2  # noqa: E402

# the real LLM on the real data: minutes on a CPU, and both data wheels
pytestmark = [pytest.mark.slow, requires_movielens_100k, requires_smollm2]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("smoke")
    argv = [
        "--num_backbone_layers",
        "2",
        "--freeze-bottom-layers",
        "1",
        "--train-examples-per-user",
        "1",
        "--max-steps",
        "3",
        "--per_device_train_batch_size",
        "4",
        "--max-eval-users",
        "24",
        "--item-id-embedding-size",
        "32",
        "--output-dir",
        str(output_dir),
    ]
    return output_dir, finetune.main(argv)


def test_main_job_writes_checkpoint_metrics_report_and_plot(smoke_run):
    output_dir, results = smoke_run
    for name in ("metrics.json", "report.md", "validation_ndcg10.png", "checkpoint/item_catalog.json"):
        assert os.path.isfile(output_dir / name), name
    saved = json.loads((output_dir / "metrics.json").read_text())
    assert saved["test"]["users"] == 24 and saved["exclude_history"] is True
    assert saved["model"]["layer_types"] == ["intra", "inter"]
    assert saved["model"]["trained_parameters"] < saved["model"]["total_parameters"]
    assert saved["dataset"]["users"] == 943
    report = (output_dir / "report.md").read_text()
    assert "full-catalog ranking" in report and "history items excluded" in report and "smoke run" in report
    # per-user ranks of the model and of popularity for every evaluated user, keyed by user id (the first 24)
    for split in ("valid", "test"):
        users = set(saved["ranks"][split]["model"])
        assert len(users) == 24 and users == set(saved["ranks"][split]["popularity"])
        assert saved["popularity"][split]["users"] == 24  # popularity on the same users: the comparison is paired
    assert " NDCG@10 over popularity on test (" in report and "95% paired bootstrap interval" in report


def test_checkpoint_loads_with_auto_model_and_evaluates_the_same(smoke_run):
    output_dir, results = smoke_run
    model = AutoModel.from_pretrained(output_dir / "checkpoint")
    assert isinstance(model, IAMForCausalRecommendation)
    assert model.config._attn_implementation == "iam_sdpa" and len(model.catalog) == 1682
    assert model.item_id_embeddings.weight.shape == (1682, 32)  # --item-id-embedding-size reached it
    assert model.item_id_embeddings.weight.abs().sum() > 0  # and the narrow table trained through its projection
    metrics = evaluate_script.main([str(output_dir / "checkpoint"), "--split", "test"])
    for key in ("hr@10", "ndcg@10", "mrr@20"):
        assert metrics[key] == pytest.approx(results["test"][key], abs=1e-6)
    assert torch.isfinite(model.adapter.item_embeddings.bias).all()


def test_personalisation_benchmark_ranks_as_the_evaluation_does(smoke_run):
    """benchmarks/personalisation.py's top-10 lists give the run's own HR@10 (same users, same exclusion)."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
    import personalisation

    output_dir, results = smoke_run
    result = personalisation.main([str(output_dir / "checkpoint"), "--split", "test", "--batch-size", "5"])
    assert result["users"] == 24 and result["hr@10"] == pytest.approx(results["test"]["hr@10"], abs=1e-9)
    assert 0 <= result["mean_overlap_with_popularity@10"] <= 1
    assert 10 <= result["coverage@10"] <= 240 and 10 <= result["popularity_coverage@10"] <= 240


def test_lora_run_reports_trained_parameters_and_saves_both_checkpoints(tmp_path):
    argv = [
        "--num_backbone_layers",
        "2",
        "--freeze-bottom-layers",
        "0",
        "--train-examples-per-user",
        "1",
        "--max-steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--max-eval-users",
        "8",
        "--lora",
        "true",
        "--lora-rank",
        "4",
        "--output-dir",
        str(tmp_path),
    ]
    results = finetune.main(argv)
    assert (
        results["model"]["lora"]
        and 0 < results["model"]["trained_parameters"] < results["model"]["total_parameters"] / 5
    )
    assert "(LoRA)" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "lora-adapter" / "adapter_model.safetensors").is_file()
    merged = AutoModel.from_pretrained(tmp_path / "checkpoint")  # merged: a plain IAM checkpoint
    assert isinstance(merged, IAMForCausalRecommendation) and not any(
        "lora" in name for name, _ in merged.named_parameters()
    )


def test_trl_generative_example_runs_on_the_real_llm(tmp_path):
    results = finetune_trl.main(
        [
            "--num-layers",
            "2",
            "--max-steps",
            "2",
            "--batch-size",
            "2",
            "--eval-users",
            "3",
            "--num-beams",
            "5",
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert results["test"]["users"] == 3 and "constrained to the catalog" in results["protocol"]
    from transformers_iam.integrations.generative import load_generative_iam

    reloaded = load_generative_iam(str(tmp_path / "checkpoint"))
    assert reloaded.config._attn_implementation == "iam_sdpa" and reloaded.config.iam_layer_types == ["intra", "inter"]


def test_gpu_preset_runs_end_to_end_when_shrunk(tmp_path):
    """The gpu preset's own path (every prefix, all layers trainable, no freezing), cut to a few steps: on the GPU in
    bf16 where there is one, else in fp32 on the CPU."""
    results = finetune.main(
        [
            "--preset",
            "gpu",
            "--num_backbone_layers",
            "2",
            "--max-steps",
            "2",
            "--per_device_train_batch_size",
            "2",
            "--max-eval-users",
            "8",
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert results["dataset"]["train_examples"] == 100000 - 3 * 943  # every prefix
    assert results["config"]["preset"] == "gpu"
    assert results["model"]["trained_parameters"] == results["model"]["total_parameters"]  # nothing frozen
    assert results["model"]["layer_types"] == ["intra", "inter"] and results["test"]["users"] == 8
