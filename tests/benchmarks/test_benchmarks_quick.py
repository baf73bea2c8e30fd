"""The item-state benchmarks run end to end in their --quick modes (a check of the scripts; their numbers mean
nothing): each exits 0 and prints its tables and ratios, and serving gives every user the same top-10 with the cache."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from ..testing_utils import requires_movielens_100k

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_quick(script: str, tmp_path) -> tuple[str, dict]:
    json_out = tmp_path / f"{script}.json"
    environment = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}
    child = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", f"{script}.py"), "all", "--quick", "--json-out", json_out],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    return child.stdout, json.loads(json_out.read_text())


@pytest.mark.slow
@requires_movielens_100k  # --quick still splits ml-100k as cpu-quick does
def test_item_states_quick(tmp_path):
    stdout, results = run_quick("item_states", tmp_path)
    assert "| row | s/step | targets/step | targets/s | targets/s ratio to (i) |" in stdout
    assert re.search(r"\| \(ii\) IAM stacked \+ item cache \+ every-item \|.*\| \d+\.\d\dx \|", stdout)
    assert "| item states | wall s | users/s | ratio to no cache |" in stdout
    assert re.search(r"\| item cache \|.*\| \d+\.\d\dx \|", stdout)
    serve = results["serve"]
    assert f"top-10 lists identical with and without the cache: {serve['users']}/{serve['users']} users" in stdout
    assert serve["matching"] == serve["users"] > 0
    assert len(results["train"]) == 4


@pytest.mark.slow
def test_item_states_scaling_quick(tmp_path):
    stdout, results = run_quick("item_states_scaling", tmp_path)
    assert "| items/history | tokens | masked fwd s | packed fwd s | fwd masked/packed |" in stdout
    assert re.search(r"\| 5 \| \d+ \|.*\| \d+\.\d\dx \|", stdout)
    assert "| history items | catalog | tokens | serve s/user | train s/user |" in stdout
    assert "(measured) |" in stdout and "(extrapolated) |" in stdout
    assert len(results["growth"]) == 3
