"""The main job's configuration: presets, ablations and the Trainer arguments they become."""

from __future__ import annotations

import pytest

from transformers_iam.experiments.build import training_arguments
from transformers_iam.experiments.config import ExperimentConfig
from transformers_iam.recsys.results import run_name


def test_gpu_preset_resolves_to_a_full_backbone_run(tmp_path):
    config = ExperimentConfig.from_preset("gpu", output_dir=str(tmp_path))
    assert config.num_backbone_layers is None and config.train_examples_per_user is None and config.epochs >= 3
    args = training_arguments(config, num_train_examples=97171)
    steps = -(-97171 // config.batch_size) * 3
    assert args.eval_steps == steps // config.evaluations and args.load_best_model_at_end
    assert args.metric_for_best_model == "ndcg@10" and args.label_names == ["labels", "history_item_indices"]
    assert args.bf16 is False and args.use_cpu  # no CUDA here: the preset falls back to fp32 on the CPU


def test_cpu_quick_is_the_default_and_overrides_win(tmp_path):
    config = ExperimentConfig.from_preset("cpu-quick", output_dir=str(tmp_path), max_history=5, ablation=None)
    assert config.num_backbone_layers == 6 and config.max_history == 5 and config.freeze_bottom_layers == 3
    with pytest.raises(ValueError, match="preset must be one of"):
        ExperimentConfig.from_preset("tpu")


def test_ablations_come_from_the_layout_switch():
    assert ExperimentConfig(ablation="no-inter").layer_types(6) == ["intra"] * 3 + ["full"] * 3
    assert ExperimentConfig(ablation="no-intra").layer_types(6) == ["full"] * 3 + ["inter"] * 3
    assert ExperimentConfig().layer_types(6) is None
    with pytest.raises(ValueError, match="ablation must be"):
        ExperimentConfig(ablation="no-both").layer_types(6)
    assert run_name({"iam_layout": "vanilla"}) == "same LLM without IAM (vanilla)"
    assert run_name({"ablation": "no-intra", "iam_layout": "stacked"}) == "IAM without intra layers"
