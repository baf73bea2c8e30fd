"""A run killed part way and resumed ends as the same run uninterrupted (tiny random backbone, seconds): bit for bit on
the CPU, to float rounding on CUDA."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import transformers_iam
from transformers_iam.experiments import DataArguments, ModelArguments, RunArguments, run_experiment
from transformers_iam.experiments.checkpoints import _check_resumable
from transformers_iam.experiments.run_arguments import EXPERIMENT_FILE

from ..testing_utils import tiny_run_files

# run_experiment trains on CUDA when the machine has it. The CPU kernels are deterministic, so resuming must reproduce
# the uninterrupted run bit for bit there. On CUDA, SDPA's backward accumulates with atomic adds in no fixed order:
# two uninterrupted runs already differ in the last bits, so the comparison allows that rounding, grown over six Adam
# steps: 1e-5 on a weight, where one step at this learning rate (1e-2) moves it by about 1e-2, so resuming from the
# wrong step, optimizer state or data order still fails.
EXACT = not torch.cuda.is_available()
METRIC_TOLERANCE = 1e-6 if EXACT else 1e-4


@pytest.mark.slow  # three short training runs, one in a subprocess
def test_killed_run_resumes_to_the_same_metrics_and_weights(tmp_path, caplog):
    config = RunArguments.from_preset("cpu-quick", output_dir=str(tmp_path / "killed"), **tiny_run_files(tmp_path))
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config.to_dict()))
    source = os.path.dirname(os.path.dirname(transformers_iam.__file__))
    script = os.path.join(os.path.dirname(__file__), "interrupted_run_script.py")
    env = {**os.environ, "PYTHONPATH": source + os.pathsep + os.environ.get("PYTHONPATH", "")}
    killed = subprocess.run([sys.executable, script, str(config_file), "4"], env=env, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    trainer_dir = tmp_path / "killed" / "trainer"
    assert (trainer_dir / "checkpoint-4" / "trainer_state.json").is_file()
    assert not (tmp_path / "killed" / "metrics.json").exists()
    with pytest.raises(FileExistsError, match="holds checkpoints of an earlier run"):
        run_experiment(config)  # without resume, an older run's checkpoints are never mixed with a new run
    with pytest.raises(ValueError, match="resume: .*experiment.json records another run: learning_rate differ"):
        run_experiment(config.replace(resume=True, learning_rate=1e-3))

    # a crash mid-save of step 6: a folder without trainer_state.json and with broken weights, never resumed from
    (trainer_dir / "checkpoint-6").mkdir()
    (trainer_dir / "checkpoint-6" / "model.safetensors").write_bytes(b"partial")
    resumed = run_experiment(config.replace(resume=True))
    assert "checkpoint-6 was cut off mid-save (no trainer_state.json): removed, never resumed from" in caplog.text
    uninterrupted = run_experiment(config.replace(output_dir=str(tmp_path / "whole")))

    assert resumed["best_step"] == uninterrupted["best_step"]
    curve = [(entry["step"], entry["ndcg@10"]) for entry in resumed["validation_curve"]]
    expected_curve = uninterrupted["validation_curve"]
    assert curve == [(entry["step"], pytest.approx(entry["ndcg@10"], abs=METRIC_TOLERANCE)) for entry in expected_curve]
    timings = ("runtime", "samples_per_second", "steps_per_second")
    for split in ("valid", "test"):
        ours = {key: value for key, value in resumed[split].items() if key not in timings}
        assert ours == pytest.approx({key: uninterrupted[split][key] for key in ours}, abs=METRIC_TOLERANCE), split
        assert "ndcg@10" in ours and "loss" in ours
    assert [step for step, _ in curve] == [2, 4, 6]  # the evaluations before the kill are kept
    weights = load_file(tmp_path / "killed" / "checkpoint" / "model.safetensors")
    theirs = load_file(tmp_path / "whole" / "checkpoint" / "model.safetensors")
    assert weights.keys() == theirs.keys()
    for name in weights:
        if EXACT:
            assert torch.equal(weights[name], theirs[name]), name
        else:
            torch.testing.assert_close(weights[name], theirs[name], rtol=1e-4, atol=1e-5, msg=name)


def test_resume_without_a_checkpoint_is_refused_before_anything_is_loaded(tmp_path):
    config = RunArguments.from_preset(
        None, output_dir=str(tmp_path), resume=True, backbone=str(tmp_path / "no-such-backbone")
    )
    with pytest.raises(FileNotFoundError, match=r"resume: .*trainer holds no complete checkpoint"):
        run_experiment(config)


# docs/reliability.md ("Resuming a run") names these as the only settings a resumed run may change
MAY_DIFFER_ON_RESUME = {"command", "notes", "resume", "sasrec_metrics"}


def interrupted_run_folder(tmp_path) -> tuple[RunArguments, str]:
    """What a killed run leaves: experiment.json (written before anything is loaded) and one complete checkpoint."""
    config = RunArguments.from_preset("cpu-quick", output_dir=str(tmp_path))
    config.command, config.notes = "finetune.py", ["first try"]
    config.save(str(tmp_path))
    checkpoint = tmp_path / "trainer" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    return config.replace(resume=True), str(tmp_path / "trainer")


@pytest.mark.parametrize("field", sorted(MAY_DIFFER_ON_RESUME - {"resume"}))
def test_resume_accepts_the_documented_differences(tmp_path, field):
    config, trainer_dir = interrupted_run_folder(tmp_path)
    if field == "sasrec_metrics":
        config = config.replace(sasrec_metrics="runs/sasrec/m.json")
    else:
        setattr(config, field, {"command": "finetune.py --resume", "notes": ["second try"]}[field])
    assert _check_resumable(config, trainer_dir).endswith("checkpoint-4")


# every field of the model and data arguments, the training ones that are set, and the preset; the folder itself too
# (a moved run is a different run to check)
RECORDED = sorted(
    [("model", f.name) for f in dataclasses.fields(ModelArguments)]
    + [("data", f.name) for f in dataclasses.fields(DataArguments) if f.name not in MAY_DIFFER_ON_RESUME]
    + [("training", name) for name in ("output_dir", "num_train_epochs", "learning_rate", "seed", "optim")]
)


@pytest.mark.parametrize("section, field", RECORDED)
def test_resume_refuses_any_other_difference(tmp_path, section, field):
    config, trainer_dir = interrupted_run_folder(tmp_path)
    saved = json.loads((tmp_path / EXPERIMENT_FILE).read_text())
    saved[section][field] = f"changed {field}"
    (tmp_path / EXPERIMENT_FILE).write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=rf"records another run: {field} differ"):
        _check_resumable(config, trainer_dir)


def test_resume_refuses_another_preset(tmp_path):
    config, trainer_dir = interrupted_run_folder(tmp_path)
    saved = json.loads((tmp_path / EXPERIMENT_FILE).read_text())
    saved["preset"] = "cpu-full"
    (tmp_path / EXPERIMENT_FILE).write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="records another run: preset differ"):
        _check_resumable(config, trainer_dir)
