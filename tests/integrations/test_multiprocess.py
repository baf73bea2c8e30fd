"""Training under `accelerate launch` with 2 CPU processes: DDP (gloo), and DeepSpeed ZeRO-2/3 through the accelerate
configs shipped in examples/accelerate/."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

import transformers_iam  # noqa: F401

from ..testing_utils import synthetic_catalog, tiny_model

SCRIPT = os.path.join(os.path.dirname(__file__), "ddp_train_script.py")
TEARDOWN_ABORT = "terminate called without an active exception"

pytestmark = pytest.mark.slow  # the real LLM, or several processes


def launch_two_processes(tmp_path, launch_options: list[str], *script_args: str) -> list[dict]:
    """Run ``ddp_train_script.py`` under ``accelerate launch`` with 2 processes; what each process recorded."""
    # HF_HOME: a developer's own `accelerate config` (HF_HOME/accelerate/default_config.yaml) is not read here
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "HF_HOME": str(tmp_path / "hf-home")}
    command = [
        # the `accelerate` CLI through this interpreter: its script need not sit beside sys.executable (--user installs)
        sys.executable,
        "-m",
        "accelerate.commands.accelerate_cli",
        "launch",
        *launch_options,
        "--num_processes",
        "2",
        "--main_process_port",
        "0",  # accelerate picks a free port at launch: a fixed one fails while another run holds it
        SCRIPT,
        str(tmp_path),
        *script_args,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0 and TEARDOWN_ABORT in result.stderr:
        # a process that aborts in the gloo group's threads as it exits though the script closes the group (ZeRO-3,
        # once in a full run of the suite on the 2-core machine, 2026-12-07; not reproduced alone): the files are
        # written again by one more launch, never more
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return [json.loads((tmp_path / f"seen_rank{rank}.json").read_text()) for rank in (0, 1)]


def test_two_processes_train_on_different_data_and_save_a_loadable_checkpoint(tmp_path):
    # `--multi_gpu` selects the torchrun launcher; the script asks the Trainer for the CPU (use_cpu, gloo), so the
    # two processes run DDP on the CPU whether or not the machine has GPUs
    options = ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    seen = launch_two_processes(tmp_path, options)
    assert [record["world_size"] for record in seen] == [2, 2]
    rank0, rank1 = (set(record["users"]) for record in seen)
    assert rank0 and rank1 and not rank0 & rank1  # each process trained on its own shard
    model = AutoModel.from_pretrained(tmp_path / "checkpoint")
    assert type(model).__name__ == "IAMForCausalRecommendation" and len(model.catalog) == 20
    torch.testing.assert_close(model.adapter.item_embeddings.bias, torch.load(tmp_path / "bias.pt"))
    assert model.adapter.item_embeddings.bias.abs().sum() > 0  # trained, not the zero init


EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples")


@pytest.mark.parametrize("config_name", ["deepspeed_zero2.yaml", "deepspeed_zero3.yaml"])
def test_deepspeed_zero_trains_the_sampled_loss_on_two_processes_and_saves_a_whole_checkpoint(tmp_path, config_name):
    # the shipped accelerate config, on 2 CPU processes: accelerate takes the DeepSpeed path only without `--cpu`
    # (AcceleratorState), and DeepSpeed falls back to its CPU accelerator and gloo on a machine without GPUs
    pytest.importorskip("deepspeed")
    options = ["--config_file", os.path.join(EXAMPLES, "accelerate", config_name)]
    seen = launch_two_processes(tmp_path, options, "deepspeed")
    assert [record["world_size"] for record in seen] == [2, 2]
    assert [record["distributed_type"] for record in seen] == ["DistributedType.DEEPSPEED"] * 2
    rank0, rank1 = (set(record["users"]) for record in seen)
    assert rank0 and rank1 and not rank0 & rank1  # each process trained on its own shard
    # ZeRO: each process keeps the optimizer's fp32 weights (and Adam's states) for its partition, about half of them
    total = seen[0]["parameter_numel"]
    partitions = [record["optimizer_partition_numel"] for record in seen]
    assert sum(partitions) >= total and max(partitions) < total
    if config_name == "deepspeed_zero3.yaml":  # ZeRO-3 partitions the parameters themselves too
        held = sum(shape[0] if shape else 1 for shape in seen[0]["local_shapes"].values())
        assert held < total
    # the main process saved whole weights: the shapes a single-process save writes, and from_pretrained loads them
    single = tiny_model(num_layers=2, num_items=20, num_sampled_negatives=8)
    single.set_catalog(synthetic_catalog())
    single.save_pretrained(tmp_path / "single")
    expected = {name: tensor.shape for name, tensor in load_file(tmp_path / "single" / "model.safetensors").items()}
    saved = {name: tensor.shape for name, tensor in load_file(tmp_path / "checkpoint" / "model.safetensors").items()}
    assert saved == expected
    model = AutoModel.from_pretrained(tmp_path / "checkpoint")
    assert type(model).__name__ == "IAMForCausalRecommendation" and len(model.catalog) == 20
    assert model.config.num_sampled_negatives == 8
    torch.testing.assert_close(model.adapter.item_embeddings.bias, torch.load(tmp_path / "bias.pt"))
    assert model.adapter.item_embeddings.bias.abs().sum() > 0  # trained, not the zero init
