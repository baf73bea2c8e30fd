"""The main job's arguments: presets, the command line and config files, ablations, and the Trainer arguments they
become."""

from __future__ import annotations

import os
import re
import sys

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback

from transformers_iam.experiments import RecommendationTrainingArguments, RunArguments
from transformers_iam.experiments.build import make_optimizer
from transformers_iam.experiments.presets import PRESETS
from transformers_iam.recsys.results import run_name

from ..testing_utils import IAMModelTester

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))

import finetune  # noqa: E402  (examples/finetune.py: its parse_args is what a user's flags go through)


def test_gpu_preset_resolves_to_a_full_backbone_run(tmp_path):
    run = RunArguments.from_preset("gpu", output_dir=str(tmp_path))
    assert run.model.num_backbone_layers is None and run.data.train_examples_per_user is None
    assert run.training.num_train_epochs >= 3
    # the paper's token-level IAM, every layer trained
    assert run.model.freeze_bottom_layers == 0 and run.model.num_item_tokens is None
    args = run.training.for_run(num_train_examples=97171)
    steps = -(-97171 // args.per_device_train_batch_size) * int(args.num_train_epochs)
    assert args.eval_steps == -(-steps // args.evaluations) and args.load_best_model_at_end
    assert args.output_dir == os.path.join(str(tmp_path), "trainer")
    assert args.metric_for_best_model == "ndcg@10" and args.label_names == ["labels", "history_item_indices"]
    # bf16 on a CUDA device; without one the preset falls back to fp32 on the CPU
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
        (2729, dict(num_train_epochs=0.7, evaluations=4), [60, 120, 180, 240]),
        (101, dict(num_train_epochs=1.5, evaluations=5), [4, 8, 12, 16, 20]),
        (101, dict(max_steps=22, evaluations=2), [11, 22]),
        # too short for 5 evenly spaced passes: the nearest count, 6 (3 would halve the curve)
        (101, dict(max_steps=6, evaluations=5), [1, 2, 3, 4, 5, 6]),
    ],
)
def test_evaluations_is_the_number_of_validation_passes_the_trainer_makes(tmp_path, examples, fields, expected_steps):
    # run by the real Trainer (on a one-weight model): it rounds a fractional epoch up and validates at its last step
    training = RecommendationTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, eval_on_start=False, **fields
    )
    args = training.for_run(examples, metric_for_best_model="loss", greater_is_better=False, label_names=["labels"])
    counter = _CountValidations()
    trainer = Trainer(
        model=_Regression(), args=args, train_dataset=_Points(examples), eval_dataset=_Points(8), callbacks=[counter]
    )
    trainer.train()
    assert counter.steps == expected_steps


@pytest.mark.parametrize("kind", ["cosine", "constant_with_warmup"])
def test_the_trainer_follows_the_configs_learning_rate_schedule(tmp_path, kind):
    training = RecommendationTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=10, warmup_steps=2, learning_rate=1e-2,
        evaluations=1, eval_on_start=False, lr_scheduler_type=kind,
    )  # fmt: skip
    args = training.for_run(101, metric_for_best_model="loss", greater_is_better=False, label_names=["labels"])
    trainer = Trainer(model=_Regression(), args=args, train_dataset=_Points(101), eval_dataset=_Points(8))
    trainer.train()
    last_rate = trainer.lr_scheduler.get_last_lr()[0]
    # cosine ends at 0 after its last step; constant stays at the peak after warm-up
    assert last_rate == (pytest.approx(0.0, abs=1e-6) if kind == "cosine" else pytest.approx(1e-2))
    with pytest.raises(ValueError, match="cosine_decay is not a valid SchedulerType"):
        RecommendationTrainingArguments(lr_scheduler_type="cosine_decay")


def test_cpu_quick_is_the_default_and_overrides_win(tmp_path):
    run = RunArguments.from_preset("cpu-quick", output_dir=str(tmp_path), max_history=5, ablation=None)
    assert run.model.num_backbone_layers == 4 and run.data.max_history == 5 and run.model.freeze_bottom_layers == 3
    assert run.model.layer_types(4) == ["intra", "intra", "intra", "inter"]  # one inter layer above a cached intra run
    with pytest.raises(ValueError, match="preset must be one of"):
        RunArguments.from_preset("tpu")
    with pytest.raises(ValueError, match=r"unknown arguments \['epochs'\]"):
        RunArguments.from_preset("cpu-quick", epochs=3)  # the Trainer's name is num_train_epochs
    assert finetune.parse_args([]).preset == "cpu-quick"


def test_ablations_come_from_the_layout_switch():
    no_inter = RunArguments.from_preset(None, ablation="no-inter").model
    assert no_inter.layer_types(6) == ["intra"] * 3 + ["full"] * 3
    assert RunArguments.from_preset(None, ablation="no-intra").model.layer_types(6) == ["full"] * 3 + ["inter"] * 3
    assert RunArguments.from_preset(None).model.layer_types(6) is None
    with pytest.raises(ValueError, match="ablation must be None, 'no-intra' or 'no-inter'"):
        RunArguments.from_preset(None, ablation="no-both")
    assert run_name({"iam_layout": "vanilla"}) == "same LLM without IAM (vanilla)"
    assert run_name({"ablation": "no-intra", "iam_layout": "stacked"}) == "IAM without intra layers"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--per_device_train_batch_size", "0"], r"per_device_train_batch_size must be an int >= 1, got 0"),
        (["--freeze-bottom-layers", "-1"], r"freeze_bottom_layers must be an int >= 0"),
        (["--num_backbone_layers", "2", "--freeze_bottom_layers", "3"], r"must be in \[0, 2\] \(num_backbone_layers\)"),
        (["--num_train_epochs", "nan"], r"num_train_epochs must be a finite number > 0"),
        (["--max_steps", "0"], r"max_steps must be -1 .* or an int >= 1, got 0"),
        (["--max_history", "0"], r"max_history must be an int >= 1 or None"),
        (["--iam_layer_types", "intra", "cross", "inter", "inter"], r"iam_layer_types\[1\] = 'cross'"),
        (["--iam_layout", "hatllm", "--ablation", "no-inter"], "applies to the stacked layout only"),
        (["--interactions_file", "x.csv"], "needs interactions_file, catalog_file and text_template together"),
        (["--iam_layout", "diagonal"], r"argument --iam_layout/--iam-layout: invalid choice"),
        (["--item_cache", "maybe"], r"argument --item_cache/--item-cache: Truthy value expected"),
        (["--epochs", "3"], r"unrecognized arguments: --epochs 3"),
    ],
)
def test_finetune_flags_are_checked_before_anything_is_loaded(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        finetune.parse_args(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize(
    "argv, trained",
    [([], True), (["--train_item_embeddings", "false"], False), (["--no_train_item_embeddings"], False)],
)
def test_booleans_read_positively_and_leave_the_preset_alone_unless_given(argv, trained):
    run = finetune.parse_args(["--preset", "cpu-quick", *argv])
    assert run.model.train_item_embeddings is trained
    assert run.training.item_embedding_learning_rate == PRESETS["cpu-quick"].get("item_embedding_learning_rate")


@pytest.mark.parametrize(
    "argv, prior",
    [
        ([], False),  # the item-level presets start the bias at 0
        (["--init_item_prior"], True),
        (["--preset", "cpu-quick-token-level"], True),
        (["--preset", "cpu-quick-token-level", "--init-item-prior", "false"], False),
        (["--preset", "cpu-ml-1m"], True),
    ],
)
def test_item_prior_flag(argv, prior):
    assert finetune.parse_args(argv).model.init_item_prior is prior


def test_a_config_file_sits_between_the_preset_and_the_flags(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("preset: cpu-full\nnum_train_epochs: 3\nmax_history: 30\nnum_item_tokens: null\n")
    run = finetune.parse_args(["--config", str(config), "--max_history", "40"])
    assert run.preset == "cpu-full" and run.training.num_train_epochs == 3.0  # the file over the preset
    assert run.data.max_history == 40  # the flag over the file
    assert run.model.num_item_tokens is None and run.model.use_item_id_embeddings  # a file can unset a value
    assert run.training.output_dir == "runs/cpu-full-stacked"
    (tmp_path / "run.json").write_text('{"per_device_train_batch_size": 2}')
    assert finetune.parse_args(["--config", str(tmp_path / "run.json")]).training.per_device_train_batch_size == 2
    (tmp_path / "bad.yaml").write_text("epochs: 3\n")
    with pytest.raises(SystemExit):
        finetune.parse_args(["--config", str(tmp_path / "bad.yaml")])


def test_each_flags_help_is_its_fields_documentation(capsys):
    with pytest.raises(SystemExit):
        finetune.parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    # IAMConfig's own documentation (the model's fields are generated from IAMConfig, not mirrored by hand)
    assert "The item-level inter half: the layers above the leading intra run see each history item through" in shown
    assert "Train the adapter's item rows (false: keep their text initialisation)." in shown
    assert "--num_train_epochs" in shown and "--per_device_train_batch_size" in shown  # transformers' own


def test_library_users_get_the_same_checks():
    with pytest.raises(ValueError, match=r"per_device_train_batch_size must be an int >= 1, got 0"):
        RunArguments.from_preset(None, per_device_train_batch_size=0)
    with pytest.raises(ValueError, match=r"learning_rate must be a finite number > 0, got -1"):
        RunArguments.from_preset("gpu", learning_rate=-1)


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
    training = RecommendationTrainingArguments(
        learning_rate=1e-4, adapter_learning_rate=1e-2, item_embedding_learning_rate=1e-6
    )
    optimizer = make_optimizer(model, training)
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
        RecommendationTrainingArguments(item_embedding_learning_rate=0)


def test_the_optimizer_is_the_one_the_arguments_name():
    model = IAMModelTester().create_model()
    assert type(make_optimizer(model, RecommendationTrainingArguments())).__name__ == "AdamW"
    sgd = make_optimizer(model, RecommendationTrainingArguments(optim="sgd", adapter_learning_rate=0.5))
    assert type(sgd).__name__ == "SGD" and {group["lr"] for group in sgd.param_groups} == {1e-4, 0.5}


def test_item_level_options_on_a_layout_without_intra_layers_are_refused_by_the_model_config(tmp_path):
    with pytest.raises(StrictDataclassError, match="num_item_tokens=1 needs a leading run of intra layers"):
        RunArguments.from_preset("cpu-quick", output_dir=str(tmp_path), iam_layout="vanilla")
    with pytest.raises(StrictDataclassError, match="needs a leading run of intra layers"):
        RunArguments.from_preset("cpu-quick", output_dir=str(tmp_path), ablation="no-intra")
    plain = RunArguments.from_preset(
        "cpu-quick", output_dir=str(tmp_path), iam_layout="vanilla", num_item_tokens=None, use_item_id_embeddings=False
    )
    assert plain.model.num_item_tokens is None and plain.model.use_item_id_embeddings is False
    assert plain.data.max_history == 50


def test_a_named_layout_or_another_depth_replaces_a_presets_list_of_kinds(tmp_path):
    # cpu-quick lists its kinds (3 intra, 1 inter); --iam_layout vanilla on it must run the plain backbone, not the list
    listed = RunArguments.from_preset("cpu-quick", output_dir=str(tmp_path)).model
    assert listed.layer_types(4) == ["intra", "intra", "intra", "inter"]
    plain = dict(num_item_tokens=None, use_item_id_embeddings=False)
    vanilla = RunArguments.from_preset("cpu-quick", iam_layout="vanilla", **plain).model
    assert vanilla.iam_layer_types is None and vanilla.layer_types(4) is None
    no_inter = RunArguments.from_preset("cpu-quick", ablation="no-inter", **plain).model
    assert no_inter.layer_types(4) == ["intra", "intra", "full", "full"]
    # the list is for the preset's depth: another depth goes back to the stacked layout
    assert RunArguments.from_preset("cpu-quick", num_backbone_layers=6).model.layer_types(6) is None
    assert RunArguments.from_preset("cpu-quick", num_backbone_layers=4).model.layer_types(4) == listed.layer_types(4)
    mixed = RunArguments.from_preset("cpu-quick", iam_layer_types=["intra", "inter", "inter", "inter"]).model
    assert mixed.layer_types(4) == ["intra", "inter", "inter", "inter"]
    with pytest.raises(ValueError, match="iam_layout='vanilla' and iam_layer_types=.* give one of them"):
        RunArguments.from_preset(None, num_backbone_layers=2, iam_layout="vanilla", iam_layer_types=["intra", "inter"])


def test_experiment_json_round_trips_and_an_older_one_is_named():
    run = RunArguments.from_preset("cpu-ml-1m", max_history=30)
    again = RunArguments.from_dict(run.to_dict())
    assert again.to_dict() == run.to_dict() and again.differences(run.to_dict()) == []
    with pytest.raises(ValueError, match="written by transformers-iam 0.1.0"):
        RunArguments.from_dict({"preset": "cpu-quick", "epochs": 5.0})
