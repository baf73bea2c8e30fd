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
    assert re.search(r"\| \(iii\) item-level IAM \(one state per item\) \+ item cache \|.*\| \d+\.\d\dx \|", stdout)
    assert "| item states | wall s | users/s | ratio to the first row |" in stdout
    assert re.search(r"\| item-level IAM \+ item cache \|.*\| \d+\.\d\dx \|", stdout)
    serve = results["serve"]
    users = serve[0]["users"]
    assert f"token-level top-10 lists identical with and without the cache: {users}/{users} users" in stdout
    assert serve[0]["matching"] == users > 0
    assert len(results["train"]) == 4
    # the item-level cache stores one state per item: fewer bytes per item than the token-level one
    token_level, item_level = results["memory"]
    assert item_level["per_item_bytes"] < token_level["per_item_bytes"] and item_level["synthetic_items"] > 0
    # one user at a time: the context run remembered gives the lists the live one gives
    live, remembered = results["latency"]
    assert f"top-10 lists identical live and remembered: {live['users']}/{live['users']} users" in stdout
    assert remembered["matching"] == live["users"] > 0


@pytest.mark.slow
def test_item_states_scaling_quick(tmp_path):
    stdout, results = run_quick("item_states_scaling", tmp_path)
    assert "| items/history | tokens | masked fwd s | packed fwd s | fwd masked/packed |" in stdout
    assert re.search(r"\| 5 \| \d+ \|.*\| \d+\.\d\dx \|", stdout)
    assert "| history items | catalog | tokens | serve s/user | train s/user |" in stdout
    assert "(measured) |" in stdout and "(extrapolated) |" in stdout
    assert len(results["growth"]) == 3


def test_sampled_loss_compares_dense_and_sparse_item_updates():
    script = os.path.join(ROOT, "benchmarks", "sampled_loss.py")
    environment = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}
    command = [sys.executable, script, "--sparse", "--num-items", "3000", "--targets", "40", "--steps", "2"]
    child = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    assert "| items | dense + AdamW step | sparse + LazyAdamW step | time ratio |" in child.stdout
    assert re.search(r"\| 3,000 \| \d+\.\d+ s \| \d+\.\d+ s \| \d+\.\d+ \|", child.stdout)
