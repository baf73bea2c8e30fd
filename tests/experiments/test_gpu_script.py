"""benchmarks/gpu/ shrunk: prepare --dry-run, then run_gpu.py --dry-run part 1 and part 2, as on the GPU machine.

The same code path as the real run (staged wheel installed to a target folder, ml-100k copied, the weights split
into two parts, carried separately, joined and checked, the speed table, the gpu preset for stacked and vanilla),
with a tiny random Llama in place of SmolLM2 and two training steps. Like the real run it uses the GPU when the machine
has one (then FlexAttention must train), else the CPU (where FlexAttention has no backward and must say so).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from ..testing_utils import requires_movielens_100k

# about 80 s on 2 CPU cores: two tiny training runs with evaluation, on ml-100k (prepare.py copies it from its wheel)
pytestmark = [pytest.mark.slow, requires_movielens_100k]

GPU_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "gpu")


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, os.path.join(GPU_DIR, name), *args], capture_output=True, text=True, check=False
    )


def test_gpu_script_dry_run(tmp_path):
    stage, state, out = tmp_path / "stage", tmp_path / "state", tmp_path / "out"
    prepared = script("prepare.py", "--dry-run", "--stage-dir", str(stage))
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    manifest = json.loads((stage / "part1" / "manifest.json").read_text())
    assert [part["size"] > 0 for part in manifest["parts"]] == [True, True]
    assert any(name.startswith("transformers_iam-") for name in manifest["wheels"])

    common = ["--dry-run", "--state", str(state), "--out", str(out)]
    first = script("run_gpu.py", "--part", "1", "--stage", str(stage / "part1"), *common)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    speed = json.loads((out / "speed.json").read_text())
    rows = {row["backend"]: row for row in speed["rows"]}
    assert rows["plain causal (sdpa)"]["time_vs_plain"] == 1.0 and rows["iam_sdpa"]["tokens_per_second"] > 0
    if torch.cuda.is_available():  # run_gpu.py measures on the GPU when there is one, in bf16
        assert "error" not in rows["iam_flex"], rows["iam_flex"]["error"]
        assert rows["iam_flex"]["tokens_per_second"] > 0 and rows["iam_flex"]["dtype"] == "torch.bfloat16"
    else:  # FlexAttention trains on GPUs only: on the CPU its row says why it has no number
        assert "no backward on CPU" in rows["iam_flex"]["error"]
    assert (state / "site" / "transformers_iam").is_dir()  # the staged wheel was installed and used

    # part 2 without part 1's weights (a machine given back in between) says what to do
    missing = script(
        "run_gpu.py",
        "--part",
        "2",
        "--stage",
        str(stage / "part2"),
        *common[:1],
        "--state",
        str(tmp_path / "cold"),
        "--out",
        str(tmp_path / "cold-out"),
    )
    assert missing.returncode != 0 and "run part 1 and part 2 again, back to back" in missing.stderr

    second = script("run_gpu.py", "--part", "2", "--stage", str(stage / "part2"), *common)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    files = sorted(os.listdir(out))
    assert files == [
        "part1.log",
        "part2.log",
        "speed.json",
        "speed.md",
        "stacked-metrics.json",
        "summary.md",
        "vanilla-metrics.json",
    ]  # at most 8 files come back from the GPU machine
    stacked = json.loads((out / "stacked-metrics.json").read_text())
    vanilla = json.loads((out / "vanilla-metrics.json").read_text())
    assert stacked["model"]["layer_types"] == ["intra", "inter"] and vanilla["model"]["layer_types"] == ["full"] * 2
    assert stacked["config"]["preset"] == "gpu"
    assert stacked["config"]["training"]["max_steps"] == vanilla["config"]["training"]["max_steps"]
    assert "| stacked | test |" in (out / "summary.md").read_text()
