"""IAMConfig validates like a transformers config: at construction, on assignment, and across fields."""

from __future__ import annotations

import json

import pytest
from huggingface_hub.errors import StrictDataclassError

from transformers_iam import IAMConfig
from transformers_iam.core.configuration_iam import REMOVED_OPTIONS

from ..testing_utils import tiny_text_config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_items=0), "num_items"),
        (dict(num_items=True), "num_items"),
        (dict(iam_layout="diagonal"), "iam_layout"),
        (dict(adapter_hidden_size=0), "adapter_hidden_size"),
        (dict(iam_layer_types=["intra", "inter"]), "iam_layer_types has 2 entries but the backbone has 4 layers"),
        (dict(iam_layer_types=["intra", "cross", "full", "full"]), r"iam_layer_types\[1\] = 'cross'; allowed values"),
        (dict(iam_layer_types="intra"), "iam_layer_types.*expected a list"),
        (dict(new_item_dropout=0.3), "new_item_dropout=0.3 drops the items' residuals .* item_rows_from_text=True"),
        (dict(item_rows_from_text=True, new_item_dropout=1.0), "new_item_dropout"),
        (dict(sparse_item_gradients=True), "sparse_item_gradients=True .* set num_sampled_negatives"),
    ],
)
def test_config_rejects_bad_values_and_names_the_field(kwargs, message):
    with pytest.raises(StrictDataclassError, match=message):
        IAMConfig(text_config=tiny_text_config(), **{"num_items": 5, **kwargs})


@pytest.mark.parametrize(
    "field, value", [("num_items", -1), ("iam_layout", "diagonal"), ("iam_layer_types", ["intra", "cross"])]
)
def test_assignment_is_validated(field, value):
    config = IAMConfig(text_config=tiny_text_config(), num_items=5)
    with pytest.raises(StrictDataclassError, match=field):
        setattr(config, field, value)
    assert getattr(config, field) == IAMConfig(text_config=tiny_text_config(), num_items=5).to_dict()[field]


def test_a_layout_too_deep_for_the_backbone_is_refused_not_changed():
    # hatllm on 2 layers would otherwise be all `full`: the plain backbone under another name
    with pytest.raises(StrictDataclassError, match="iam_layout='hatllm' needs at least 3 backbone layers, got 2"):
        IAMConfig(text_config=tiny_text_config(num_layers=2), iam_layout="hatllm")
    with pytest.raises(StrictDataclassError, match="needs at least 2"):
        IAMConfig(text_config=tiny_text_config(num_layers=1), iam_layout="stacked")
    assert IAMConfig(text_config=tiny_text_config(num_layers=1), iam_layout="vanilla").resolved_layer_types == ["full"]


def test_cross_field_check_runs_on_validate_after_an_assignment():
    config = IAMConfig(text_config=tiny_text_config(num_layers=4), num_items=5)
    config.iam_layer_types = ["intra", "inter"]  # each kind is valid; the length is a cross-field check
    with pytest.raises(StrictDataclassError, match="2 entries but the backbone has 4 layers"):
        config.validate()


def test_config_layouts_and_explicit_list_wins():
    config = IAMConfig(text_config=tiny_text_config(num_layers=6).to_dict(), num_items=3)
    assert config.text_config.model_type == "llama"
    assert config.resolved_layer_types == ["intra"] * 3 + ["inter"] * 3
    config = IAMConfig(
        text_config=tiny_text_config(num_layers=4),
        iam_layout="vanilla",
        iam_layer_types=["full", "inter", "intra", "full"],
    )
    assert config.resolved_layer_types == ["full", "inter", "intra", "full"]
    config = IAMConfig(text_config=tiny_text_config(num_layers=4), iam_layout="alternating")
    assert config.resolved_layer_types == ["intra", "inter", "intra", "inter"]


@pytest.mark.parametrize(
    "removed, value",
    [
        ("adapter_scoring", "cosine"),
        ("adapter_dropout", 0.1),
        ("item_token_positions", "renumbered"),
        ("tie_item_id_embeddings", True),
        ("item_id_dropout", 0.3),
        ("score_items_from_text", True),
        ("item_residual_dropout", 0.3),
    ],
)
def test_a_checkpoint_that_used_a_removed_option_fails_naming_it(removed, value, tmp_path):
    # a config.json of 0.1.0: at the value this release computes the option is dropped and the checkpoint loads,
    # at any other value loading stops and names the option and the release that had it
    saved = IAMConfig(text_config=tiny_text_config(), num_items=5)
    saved.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    values = json.loads(path.read_text())
    values[removed] = REMOVED_OPTIONS[removed]
    path.write_text(json.dumps(values))
    reloaded = IAMConfig.from_pretrained(tmp_path)
    assert not hasattr(reloaded, removed) and removed not in reloaded.to_dict()
    values[removed] = value
    path.write_text(json.dumps(values))
    with pytest.raises(ValueError, match=rf"{removed}=.*removed after transformers-iam 0.1.0"):
        IAMConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("supervision, readout", [("last", "query"), ("every_item", "last_item")])
def test_readout_became_part_of_supervision(supervision, readout):
    config = IAMConfig(text_config=tiny_text_config(), num_items=5, supervision=supervision, readout=readout)
    assert "readout" not in config.to_dict()
    other = {"query": "last_item", "last_item": "query"}[readout]
    with pytest.raises(ValueError, match=f"readout='{other}' with supervision='{supervision}'"):
        IAMConfig(text_config=tiny_text_config(), num_items=5, supervision=supervision, readout=other)
