"""The main job's configuration: presets, ablations and the Trainer arguments they become."""

from __future__ import annotations

import os
import re
import sys

import pytest
import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback

from transformers_iam.experiments.build import make_optimizer, training_arguments
from transformers_iam.experiments.config import ExperimentConfig
from transformers_iam.recsys.results import run_name

from ..testing_utils import IAMModelTester

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))

import finetune  # noqa: E402  (examples/finetune.py: its parse_args is what a user's flags go through)


def test_gpu_preset_resolves_to_a_full_backbone_run(tmp_path):
    config = ExperimentConfig.from_preset("gpu", output_dir=str(tmp_path))
    assert config.num_backbone_layers is None and config.train_examples_per_user is None and config.epochs >= 3
    # the paper's token-level IAM, every layer trained
    assert config.freeze_bottom_layers == 0 and config.num_item_tokens is None
    args = training_arguments(config, num_train_examples=97171)
    steps = -(-97171 // config.batch_size) * int(config.epochs)
    assert args.eval_steps == -(-steps // config.evaluations) and args.load_best_model_at_end
    assert args.metric_for_best_model == "ndcg@10" and args.label_names == ["labels", "history_item_indices"]
    # bf16 on a CUDA device; without one the preset falls back to fp32 on the CPU (build.training_arguments)
    cuda = torch.cuda.is_available()
    assert args.bf16 is cuda and args.use_cpu is not cuda


class _Regression(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, labels):
        return {"loss": ((self.weight * x - labels) ** 2).mean(), "logits": self.weight * x}


class _Points(Dataset):
    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        return {"x": torch.tensor(float(index % 7)), "labels": torch.tensor(2.0 * (index % 7))}


class _CountValidations(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_evaluate(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


@pytest.mark.parametrize(
    "examples, fields, expected_steps",
    [
        # cpu-quick's shape: 2,729 windows, 70% of an epoch; the run used to validate at 59, 118, 177, 236 and 240
        (2729, dict(epochs=0.7, evaluations=4), [60, 120, 180, 240]),
        (101, dict(epochs=1.5, evaluations=5), [4, 8, 12, 16, 20]),
        (101, dict(max_steps=22, evaluations=2), [11, 22]),
        # too short for 5 evenly spaced passes: the nearest count, 6 (3 would halve the curve)
        (101, dict(max_steps=6, evaluations=5), [1, 2, 3, 4, 5, 6]),
    ],
)
def test_evaluations_is_the_number_of_validation_passes_the_trainer_makes(tmp_path, examples, fields, expected_steps):
    # run by the real Trainer (on a one-weight model): it rounds a fractional epoch up and validates at its last step
    config = ExperimentConfig(output_dir=str(tmp_path), batch_size=8, evaluate_before_training=False, **fields)
    args = training_arguments(
        config, examples, metric_for_best_model="loss", greater_is_better=False, label_names=["labels"]
    )
    counter = _CountValidations()
    trainer = Trainer(
        model=_Regression(), args=args, train_dataset=_Points(examples), eval_dataset=_Points(8), callbacks=[counter]
    )
    trainer.train()
    assert counter.steps == expected_steps


@pytest.mark.parametrize("kind", ["cosine", "constant_with_warmup"])
def test_the_trainer_follows_the_configs_learning_rate_schedule(tmp_path, kind):
    config = ExperimentConfig(
        output_dir=str(tmp_path), batch_size=8, max_steps=10, warmup_steps=2, learning_rate=1e-2, evaluations=1,
        evaluate_before_training=False, lr_scheduler_type=kind,
    )  # fmt: skip
    args = training_arguments(
        config, 101, metric_for_best_model="loss", greater_is_better=False, label_names=["labels"]
    )
    trainer = Trainer(model=_Regression(), args=args, train_dataset=_Points(101), eval_dataset=_Points(8))
    trainer.train()
    last_rate = trainer.lr_scheduler.get_last_lr()[0]
    # cosine ends at 0 after its last step; constant stays at the peak after warm-up
    assert last_rate == (pytest.approx(0.0, abs=1e-6) if kind == "cosine" else pytest.approx(1e-2))
    with pytest.raises(ValueError, match="lr_scheduler_type must be one of"):
        ExperimentConfig(lr_scheduler_type="cosine_decay")


def test_cpu_quick_is_the_default_and_overrides_win(tmp_path):
    config = ExperimentConfig.from_preset("cpu-quick", output_dir=str(tmp_path), max_history=5, ablation=None)
    assert config.num_backbone_layers == 4 and config.max_history == 5 and config.freeze_bottom_layers == 3
    assert config.layer_types(4) == ["intra", "intra", "intra", "inter"]  # one inter layer above a cached intra run
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


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch-size", "0"], r"--batch-size \(batch_size\) must be an int >= 1, got 0"),
        (["--freeze-bottom-layers", "-1"], r"--freeze-bottom-layers \(freeze_bottom_layers\) must be an int >= 0"),
        (["--num-layers", "2", "--freeze-bottom-layers", "3"], r"must be in \[0, 2\] \(num_backbone_layers\), got 3"),
        (["--epochs", "nan"], r"--epochs \(epochs\) must be a finite number > 0"),
        (["--max-steps", "0"], r"--max-steps \(max_steps\) must be -1 .* or an int >= 1, got 0"),
        (["--max-history", "0"], r"--max-history \(max_history\) must be an int >= 1 or None"),
        (["--layer-types", "intra,cross"], r"iam_layer_types\[1\] = 'cross'"),
        (["--layout", "hatllm", "--ablation", "no-inter"], "applies to the stacked layout only"),
        (["--interactions-file", "x.csv"], "needs interactions_file, catalog_file and text_template together"),
    ],
)
def test_finetune_flags_are_checked_before_anything_is_loaded(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        finetune.parse_args(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize(
    "argv, frozen", [([], False), (["--no-train-item-embeddings"], True), (["--train-item-embeddings"], False)]
)
def test_item_embeddings_flag_leaves_the_preset_alone_unless_given(argv, frozen):
    config = finetune.parse_args(["--preset", "cpu-quick", *argv])
    assert config.freeze_item_embeddings is frozen
    preset_rate = ExperimentConfig.PRESETS["cpu-quick"].get("item_embedding_learning_rate")
    assert config.item_embedding_learning_rate == preset_rate


@pytest.mark.parametrize(
    "argv, prior",
    [
        ([], False),  # the item-level presets start the bias at 0
        (["--init-item-prior"], True),
        (["--preset", "cpu-quick-token-level"], True),
        (["--preset", "cpu-quick-token-level", "--no-init-item-prior"], False),
        (["--preset", "cpu-ml-1m"], True),
    ],
)
def test_item_prior_flag(argv, prior):
    assert finetune.parse_args(argv).init_item_prior is prior


def test_library_users_get_the_same_checks():
    with pytest.raises(ValueError, match=r"batch_size must be an int >= 1, got 0"):
        ExperimentConfig(batch_size=0)
    with pytest.raises(ValueError, match=r"learning_rate must be a finite number > 0, got -1"):
        ExperimentConfig.from_preset("gpu", learning_rate=-1)


@pytest.mark.parametrize("lora", [False, True])
def test_item_embeddings_train_at_their_own_rate_and_the_bias_at_the_adapters(lora):
    # Adam's first step moves every weight with a gradient by about its learning rate: the step sizes show which
    # group each parameter landed in (under LoRA, PEFT trains a renamed copy of the adapter)
    tester = IAMModelTester()
    model = tester.create_model()
    if lora:
        from transformers_iam.integrations.peft import apply_lora

        model = apply_lora(model, rank=4)
    _, inputs = tester.prepare_config_and_inputs()
    config = ExperimentConfig(learning_rate=1e-4, adapter_learning_rate=1e-2, item_embedding_learning_rate=1e-6)
    optimizer = make_optimizer(model, config)
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    model(**inputs, labels=torch.arange(inputs["input_ids"].shape[0])).loss.backward()
    optimizer.step()
    step = {name: (value.detach() - before[name]).abs().max().item() for name, value in model.named_parameters()}
    trained = {name: size for name, size in step.items() if size > 0}

    def step_of(suffix: str) -> float:
        (size,) = [size for name, size in trained.items() if name.endswith(suffix)]
        return size

    assert step_of("item_embeddings.weight") == pytest.approx(1e-6, rel=0.1)
    assert step_of("item_embeddings.bias") == pytest.approx(1e-2, rel=0.1)
    assert step_of("dense.weight") == pytest.approx(1e-2, rel=0.1)
    backbone_steps = [size for name, size in trained.items() if "adapter." not in name]
    assert backbone_steps and max(backbone_steps) == pytest.approx(1e-4, rel=0.1)

    with pytest.raises(ValueError, match=r"item_embedding_learning_rate must be a finite number > 0, got 0"):
        ExperimentConfig(item_embedding_learning_rate=0)


def test_item_level_options_on_a_layout_without_intra_layers_name_the_flags_that_turn_them_off(tmp_path):
    with pytest.raises(ValueError, match="--num-item-tokens 0 --no-item-id-embeddings"):
        ExperimentConfig.from_preset("cpu-quick", output_dir=str(tmp_path), iam_layout="vanilla")
    with pytest.raises(ValueError, match="ablation='no-intra'"):
        ExperimentConfig.from_preset("cpu-quick", output_dir=str(tmp_path), ablation="no-intra")
    plain = ExperimentConfig.from_preset(
        "cpu-quick", output_dir=str(tmp_path), iam_layout="vanilla", reset=("num_item_tokens", "item_id_embeddings")
    )
    assert plain.num_item_tokens is None and plain.item_id_embeddings is False and plain.max_history == 50
    with pytest.raises(ValueError, match="does not have: \\['no_such_field'\\]"):
        ExperimentConfig.from_preset("cpu-quick", reset=("no_such_field",))


def test_a_named_layout_or_another_depth_replaces_a_presets_list_of_kinds(tmp_path):
    # cpu-quick lists its kinds (3 intra, 1 inter); --layout vanilla on it must run the plain backbone, not the list
    listed = ExperimentConfig.from_preset("cpu-quick", output_dir=str(tmp_path))
    assert listed.layer_types(4) == ["intra", "intra", "intra", "inter"]
    plain = ("num_item_tokens", "item_id_embeddings")
    vanilla = ExperimentConfig.from_preset("cpu-quick", iam_layout="vanilla", reset=plain)
    assert vanilla.iam_layer_types is None and vanilla.layer_types(4) is None
    assert ExperimentConfig.from_preset("cpu-quick", ablation="no-inter", reset=plain).layer_types(4) == [
        "intra",
        "intra",
        "full",
        "full",
    ]
    # the list is for the preset's depth: another depth goes back to the stacked layout
    assert ExperimentConfig.from_preset("cpu-quick", num_backbone_layers=6).layer_types(6) is None  # 3 intra, 3 inter
    assert ExperimentConfig.from_preset("cpu-quick", num_backbone_layers=4).layer_types(4) == listed.layer_types(4)
    mixed = ExperimentConfig.from_preset("cpu-quick", iam_layer_types=["intra", "inter", "inter", "inter"])
    assert mixed.layer_types(4) == ["intra", "inter", "inter", "inter"]
    with pytest.raises(ValueError, match="iam_layout='vanilla' and iam_layer_types=.* give one of them"):
        ExperimentConfig(num_backbone_layers=2, iam_layout="vanilla", iam_layer_types=["intra", "inter"])
