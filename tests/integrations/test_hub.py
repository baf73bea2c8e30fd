"""Hub: the push up to the commit it would send, and the pull through huggingface_hub's real cache resolution.

No machine here reaches the Hub. The push is run for real up to `HfApi.create_repo` /
`HfApi.create_commit`, which are replaced by recorders (the network boundary); the pull uses a
populated cache and HF_HUB_OFFLINE=1 in a fresh interpreter, so resolution is the library's own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard

from transformers_iam import IAMDataCollator
from transformers_iam.integrations.hub import build_model_card, push_to_hub
from transformers_iam.integrations.peft import apply_lora

from ..testing_utils import collator_kwargs, tiny_model

RESULTS = {
    "protocol": "protocol: leave-one-out, test split, full-catalog ranking (no sampled negatives), "
    "pessimistic ties, history items excluded in the ranking",
    "dataset": {
        "name": "ml-100k",
        "users": 943,
        "items": 1682,
        "interactions": 100000,
        "history_median": 65,
        "history_max": 737,
        "train_examples": 1886,
    },
    "model": {"backbone": "HuggingFaceTB/SmolLM2-135M-Instruct"},
    "valid": {**{f"{m}@{k}": 0.1 for m in ("hr", "ndcg", "mrr") for k in (5, 10, 20)}, "users": 943},
    "test": {**{f"{m}@{k}": 0.2 for m in ("hr", "ndcg", "mrr") for k in (5, 10, 20)}, "users": 943},
    "popularity": {},
}


class RecordingApi(HfApi):
    """HfApi whose network calls (repo creation, commit) record what they would send."""

    def __init__(self):
        super().__init__(token="hf_offline")
        self.repos, self.commits, self.validated = [], [], []

    def create_repo(self, repo_id, **kwargs):
        self.repos.append((repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def create_commit(self, repo_id, operations, commit_message, **kwargs):
        files = {}
        for operation in operations:
            assert isinstance(operation, CommitOperationAdd)
            with operation.as_file() as handle:
                files[operation.path_in_repo] = handle.read()
        # the server validates the card's metadata here; parse it locally with the same card class instead
        self.validated.append(ModelCard(files["README.md"].decode()).data.to_dict())
        self.commits.append({"repo_id": repo_id, "message": commit_message, "files": files})
        return "commit-recorded"


@pytest.fixture
def trained(tokenizer, catalog):
    model = tiny_model(num_items=len(catalog))
    model.set_catalog(catalog)
    return model, IAMDataCollator(tokenizer, catalog, max_length=64, **collator_kwargs())


def test_push_sends_weights_catalog_prompt_settings_and_card(trained):
    model, collator = trained
    api = RecordingApi()
    push_to_hub(model, "org/iam-tiny", collator=collator, results=RESULTS, api=api)
    assert api.repos[0][0] == "org/iam-tiny" and api.repos[0][1]["exist_ok"]
    (commit,) = api.commits
    assert api.validated[0]["library_name"] == "transformers" and "recommendation" in api.validated[0]["tags"]
    files = commit["files"]
    for name in (
        "config.json",
        "model.safetensors",
        "item_catalog.json",
        "iam_collator.json",
        "tokenizer.json",
        "README.md",
    ):
        assert name in files, name
    assert json.loads(files["config.json"])["model_type"] == "iam"
    assert len(json.loads(files["item_catalog.json"])["items"]) == 20
    card = files["README.md"].decode()
    for fragment in (
        "library_name: transformers",
        "intra, intra, inter, inter",
        "943 users",
        "full-catalog ranking",
        "| IAM stacked, test | 943 | 0.2000",
        "AutoModel.from_pretrained('org/iam-tiny')",
        "import transformers_iam",
    ):
        assert fragment in card, fragment


def test_card_shows_the_validation_plot_and_the_results_table(trained, tmp_path):
    from transformers_iam.experiments.plots import plot_validation

    model, collator = trained
    figure = tmp_path / "validation_ndcg10.png"  # drawn as a run draws it, from a Trainer log history
    history = [{"step": step, "loss": 7.0 - step / 10} for step in (1, 2, 3)] + [
        {"step": step, "eval_ndcg@10": 0.01 * step} for step in (2, 3)
    ]
    plot_validation(history, str(figure), reference={"popularity": 0.02})
    results = {**RESULTS, "popularity": {"test": RESULTS["test"], "valid": RESULTS["valid"]}}
    api = RecordingApi()
    push_to_hub(model, "org/iam-tiny", collator=collator, results=results, api=api, figure=figure)
    files = api.commits[0]["files"]
    assert files["validation_ndcg10.png"] == figure.read_bytes()
    card = files["README.md"].decode()
    assert (
        "![Training loss and validation NDCG@10 during training, with popularity as a line](validation_ndcg10.png)"
        in card
    )
    assert "| IAM stacked, test | 943 | 0.2000" in card and "| popularity, valid | 943 | 0.1000" in card
    assert card.index("| IAM stacked, test |") < card.index("](validation_ndcg10.png)") < card.index("## How to load")
    assert "validation_ndcg10.png" not in str(build_model_card(model, "org/x", results))  # no figure, no image


def test_a_missing_figure_is_named_before_the_repo_is_created(trained, tmp_path):
    api = RecordingApi()
    with pytest.raises(FileNotFoundError, match="nope.png' does not exist"):
        push_to_hub(trained[0], "org/iam-tiny", collator=trained[1], api=api, figure=tmp_path / "nope.png")
    assert api.repos == [] and api.commits == []


def test_push_lora_adapter_only(trained):
    model, collator = trained
    api = RecordingApi()
    push_to_hub(apply_lora(model, rank=4), "org/iam-tiny-lora", collator=collator, api=api)
    files = api.commits[0]["files"]
    assert "adapter_model.safetensors" in files and "adapter_config.json" in files and "model.safetensors" not in files
    assert "item_catalog.json" in files and "PeftModel.from_pretrained" in files["README.md"].decode()


def test_card_without_results_says_so(trained):
    card = str(build_model_card(trained[0], "org/x"))
    assert "Not recorded." in card


def populate_cache(cache_dir, repo_id: str, folder) -> None:
    """The cache layout huggingface_hub writes when it downloads a repo: blobs, a snapshot, refs/main."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache_dir / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    for name in os.listdir(folder):
        shutil.copy(folder / name, snapshot / name)


def test_pull_from_the_hub_cache_offline(tmp_path, trained):
    model, collator = trained
    api = RecordingApi()
    push_to_hub(model, "org/iam-tiny", collator=collator, api=api)
    pushed = tmp_path / "pushed"
    pushed.mkdir()
    for name, content in api.commits[0]["files"].items():
        (pushed / name).write_bytes(content)
    cache = tmp_path / "hub-cache"
    populate_cache(cache, "org/iam-tiny", pushed)
    script = textwrap.dedent(
        """
        import json, sys
        import transformers_iam
        from transformers import AutoModel, pipeline
        model = AutoModel.from_pretrained("org/iam-tiny")
        recommender = pipeline("item-recommendation", model="org/iam-tiny")
        top = recommender({"history": ["i1", "i2"]}, top_k=3)
        print(json.dumps({"class": type(model).__name__, "attn": model.config._attn_implementation,
                          "items": len(model.catalog), "top": [row["item_id"] for row in top],
                          "device": str(recommender.device)}))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf-home")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    pulled = json.loads(result.stdout.strip().splitlines()[-1])
    assert pulled["class"] == "IAMForCausalRecommendation" and pulled["attn"] == "iam_sdpa" and pulled["items"] == 20
    # compared on the device the pipeline chose (a GPU when there is one): another device could reorder near ties
    device = torch.device(pulled["device"])
    batch = {key: value.to(device) for key, value in collator([{"history": ["i1", "i2"]}]).items()}
    expected = model.to(device).recommend(
        batch["input_ids"],
        batch["attention_mask"],
        batch["item_segment_ids"],
        k=3,
        exclude_item_ids=batch["history_item_indices"],
    )
    assert pulled["top"] == expected.item_ids[0]
