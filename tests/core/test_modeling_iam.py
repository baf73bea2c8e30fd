"""IAMForCausalRecommendation, checked by the effect of its masks on the model's outputs."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoConfig, AutoModel

from transformers_iam import IAMConfig, IAMDataCollator, IAMForCausalRecommendation, IAMPreTrainedModel, ItemCatalog
from transformers_iam.core.attention import ItemSegments

from ..testing_utils import (
    BACKBONES,
    ITEM2,
    NOT_ITEM2,
    SEGMENTS,
    collator_kwargs,
    hidden_states,
    random_ids,
    same_weights_with,
    tiny_model,
    tiny_text_config,
)


@pytest.fixture
def collator(tokenizer, catalog):
    return IAMDataCollator(tokenizer, catalog, max_length=64, **collator_kwargs())


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_intra_isolates_items(backbone):
    model = tiny_model(backbone, iam_layer_types=["intra"] * 4)
    input_ids = random_ids()
    changed = input_ids.clone()
    changed[0, ITEM2] = torch.tensor([151, 152])
    before, after = hidden_states(model, input_ids), hidden_states(model, changed)
    for layer, (old, new) in enumerate(zip(before, after)):
        torch.testing.assert_close(old[0, NOT_ITEM2], new[0, NOT_ITEM2], msg=f"layer {layer} leaked item 2")
    assert not torch.allclose(before[-1][0, ITEM2], after[-1][0, ITEM2])


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_inter_sees_other_items_only(backbone):
    model = tiny_model(backbone, num_layers=1, iam_layer_types=["inter"])
    input_ids = random_ids()
    last_of_item2 = ITEM2.stop - 1
    same_item_changed = input_ids.clone()
    same_item_changed[0, ITEM2.start] = 151
    earlier_item_changed = input_ids.clone()
    earlier_item_changed[0, 3] = 151
    reference = hidden_states(model, input_ids)[-1][0, last_of_item2]
    torch.testing.assert_close(hidden_states(model, same_item_changed)[-1][0, last_of_item2], reference)
    assert not torch.allclose(hidden_states(model, earlier_item_changed)[-1][0, last_of_item2], reference)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("layout", ["stacked", "alternating", "hatllm"])
def test_causality(backbone, layout: str):
    model = tiny_model(backbone, num_layers=6, iam_layout=layout)
    input_ids = random_ids()
    for position in (3, 6, 9):
        changed = input_ids.clone()
        changed[0, position] = 151
        for old, new in zip(hidden_states(model, input_ids), hidden_states(model, changed)):
            torch.testing.assert_close(old[0, :position], new[0, :position])


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_vanilla_matches_plain_backbone(backbone):
    model = tiny_model(backbone, iam_layout="vanilla")
    plain_config = copy.deepcopy(model.config.text_config)
    plain = AutoModel.from_config(plain_config, attn_implementation="sdpa").eval()
    plain.load_state_dict(model.model.state_dict())
    assert plain.config._attn_implementation == "sdpa"
    input_ids = random_ids()
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, -2:] = 0  # right padding: positions stay 0..n-1 in both
    ours = hidden_states(model, input_ids, attention_mask=attention_mask)
    with torch.no_grad():
        theirs = plain(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states
    assert len(ours) == len(theirs)
    for layer, (a, b) in enumerate(zip(ours, theirs)):
        torch.testing.assert_close(a[0, :-2], b[0, :-2], msg=f"layer {layer}")
    # and the item-aware layouts really differ from it
    stacked = same_weights_with(model, iam_layout="stacked")
    assert not torch.allclose(hidden_states(stacked, input_ids)[-1], hidden_states(model, input_ids)[-1])


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_padding_is_safe(backbone, attn_implementation: str, collator):
    examples = [{"history": ["i3"], "target": "i1"}, {"history": [f"i{k}" for k in range(12)], "target": "i2"}]
    for layout in ("stacked", "alternating", "hatllm", "vanilla"):
        model = tiny_model(backbone, iam_layout=layout, attn_implementation=attn_implementation)
        for padding_side in ("left", "right"):
            collator.padding_side = padding_side
            batch = collator(examples)
            assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum() / 3  # heavy padding
            with torch.no_grad():
                output = model(**batch, output_hidden_states=True)
            assert torch.isfinite(output.logits).all() and torch.isfinite(output.loss)
            for states in output.hidden_states:
                assert torch.isfinite(states).all(), (layout, padding_side)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_batch_invariance(backbone, collator):
    model = tiny_model(backbone)
    short = {"history": ["i3", "i5"], "target": "i1"}
    long = {"history": [f"i{k}" for k in range(10)], "target": "i2"}
    for padding_side in ("left", "right"):
        collator.padding_side = padding_side
        with torch.no_grad():
            alone = model(**collator([short])).logits
            batched = model(**collator([long, short])).logits
        torch.testing.assert_close(batched[1:], alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_eager_matches_sdpa(backbone, collator):
    model = tiny_model(backbone, iam_layout="alternating")
    eager = same_weights_with(model, attn_implementation="eager")
    assert eager.config._attn_implementation == "iam_eager"
    collator.padding_side = "left"
    batch = collator(
        [{"history": ["i3", "i4"], "target": "i1"}, {"history": [f"i{k}" for k in range(9)], "target": "i2"}]
    )
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, eager(**batch).logits, atol=1e-5, rtol=1e-4)


def test_no_row_is_fully_masked_under_left_padding():
    segments = ItemSegments(torch.tensor([[0, 0, 0, 1, 1, 0]]))
    padding = torch.tensor([[False, False, True, True, True, True]])
    base = padding[:, None, None, :] & torch.ones(6, 6, dtype=torch.bool).tril()
    for layer_type in ("intra", "inter"):
        mask = segments.mask_for(layer_type, base, 6, 6, None)
        assert mask.any(-1).all(), layer_type
        # real tokens keep exactly their semantic: never a padding key
        assert not mask[0, 0, 2:, :2].any()


def test_missing_segment_ids_is_an_error():
    model = tiny_model()
    with pytest.raises(ValueError, match="item_segment_ids is required"):
        model(input_ids=random_ids())
    # a vanilla model needs none
    assert tiny_model(iam_layout="vanilla")(input_ids=random_ids()).logits.shape == (1, 20)


def test_segment_ids_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="item_segment_ids has shape"):
        tiny_model()(input_ids=random_ids(), item_segment_ids=SEGMENTS[:, :-1])


def test_labels_out_of_catalog_is_an_error():
    with pytest.raises(ValueError, match="catalog indices"):
        tiny_model()(input_ids=random_ids(), item_segment_ids=SEGMENTS, labels=torch.tensor([20]))


def test_recommend_excludes_items_and_names_them(catalog):
    model = tiny_model()
    model.set_catalog(catalog)
    input_ids = random_ids()
    full = model.recommend(input_ids, item_segment_ids=SEGMENTS, k=20)
    top3 = full.indices[0, :3].tolist()
    excluded = model.recommend(input_ids, item_segment_ids=SEGMENTS, k=5, exclude_item_ids=[top3])
    assert not set(top3) & set(excluded.indices[0].tolist())
    assert excluded.indices[0].tolist() == full.indices[0, 3:8].tolist()
    assert excluded.item_ids[0] == catalog.ids_of(excluded.indices[0])


def test_save_and_reload_through_auto_model(tmp_path, catalog):
    model = tiny_model("qwen2", iam_layout="hatllm", num_layers=3)
    model.set_catalog(catalog)
    model.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, IAMConfig) and config.resolved_layer_types == ["intra", "full", "inter"]
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, IAMForCausalRecommendation)
    assert reloaded.config._attn_implementation == "iam_sdpa"
    assert reloaded.catalog == catalog
    input_ids = random_ids()
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(input_ids=input_ids, item_segment_ids=SEGMENTS).logits,
            model(input_ids=input_ids, item_segment_ids=SEGMENTS).logits,
        )
        # item-aware attention is still active after the reload: plain causal attention differs
        plain = same_weights_with(reloaded, iam_layout="vanilla")
        assert not torch.allclose(
            plain(input_ids=input_ids).logits, reloaded(input_ids=input_ids, item_segment_ids=SEGMENTS).logits
        )


def test_reload_with_eager_stays_item_aware(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path, attn_implementation="eager")
    assert reloaded.config._attn_implementation == "iam_eager"
    reloaded.set_attn_implementation("sdpa")
    assert reloaded.config._attn_implementation == "iam_sdpa"
    assert reloaded.model.config._attn_implementation == "iam_sdpa"


def test_catalog_that_does_not_match_the_checkpoint(tmp_path, catalog):
    model = tiny_model(num_items=len(catalog) + 1)
    with pytest.raises(ValueError, match="catalog has 20 items but this model scores 21"):
        model.set_catalog(catalog)
    model = tiny_model(num_items=len(catalog))
    model.set_catalog(catalog)
    model.save_pretrained(tmp_path)
    ItemCatalog(catalog.item_ids[:-1], catalog.texts[:-1]).save(tmp_path)
    with pytest.raises(ValueError, match="catalog has 19 items but this model scores 20"):
        AutoModel.from_pretrained(tmp_path)


def test_item_prior_ranks_by_popularity_before_training():
    model = tiny_model(num_items=6)
    counts = torch.tensor([5.0, 0.0, 50.0, 1.0, 10.0, 2.0])
    model.init_item_prior(counts)
    torch.nn.init.zeros_(model.adapter.item_embeddings.weight)
    top = model.recommend(random_ids(), item_segment_ids=SEGMENTS, k=6)
    assert top.indices[0].tolist() == [2, 4, 0, 5, 3, 1]
    with pytest.raises(ValueError, match="item_counts has 5 entries for 6 catalog items"):
        model.init_item_prior(counts[:5])


def test_from_backbone_keeps_pretrained_weights_and_cuts_layers(tmp_path, catalog):
    from transformers import LlamaModel

    torch.manual_seed(5)
    pretrained = LlamaModel(tiny_text_config(num_layers=4)).eval()
    pretrained.save_pretrained(tmp_path)
    model = IAMForCausalRecommendation.from_backbone(
        str(tmp_path), catalog=catalog, num_backbone_layers=2, iam_layout="vanilla"
    )
    assert model.config.num_backbone_layers == 2 and len(model.model.layers) == 2 and model.catalog == catalog
    for name, value in model.model.state_dict().items():
        torch.testing.assert_close(value, pretrained.state_dict()[name], msg=name)
    input_ids = random_ids()
    with torch.no_grad():  # vanilla IAM == the pretrained model (the last state is normed, so compare layer 1)
        ours = model(input_ids=input_ids, output_hidden_states=True).hidden_states[1]
        theirs = pretrained(input_ids=input_ids, output_hidden_states=True).hidden_states[1]
    torch.testing.assert_close(ours, theirs)
    with pytest.raises(ValueError, match=r"num_backbone_layers must be in \[1, 4\], got 5"):
        IAMForCausalRecommendation.from_backbone(str(tmp_path), catalog=catalog, num_backbone_layers=5)
    with pytest.raises(ValueError, match="num_items=3 but the catalog has 20 items"):
        IAMForCausalRecommendation.from_backbone(str(tmp_path), num_items=3, catalog=catalog)


@pytest.mark.parametrize("layout", ["stacked", "vanilla"])
def test_attention_dropout_reaches_the_item_aware_layers_in_training_only(tmp_path, catalog, layout):
    from transformers import LlamaModel

    text_config = tiny_text_config(num_layers=4)
    text_config.attention_dropout = 0.5  # the backbone's own setting is kept
    LlamaModel(text_config).save_pretrained(tmp_path)
    model = IAMForCausalRecommendation.from_backbone(str(tmp_path), catalog=catalog, iam_layout=layout)
    assert model.config.text_config.attention_dropout == 0.5
    assert all(layer.self_attn.attention_dropout == 0.5 for layer in model.model.layers)
    input_ids = random_ids()
    segments = SEGMENTS if layout == "stacked" else None
    with torch.no_grad():
        first, second = (model.train()(input_ids=input_ids, item_segment_ids=segments).logits for _ in range(2))
        assert not torch.allclose(first, second)  # the item-aware backend was handed the dropout
        first, second = (model.eval()(input_ids=input_ids, item_segment_ids=segments).logits for _ in range(2))
    torch.testing.assert_close(first, second)


# -- checkpoints bound to their catalog (docs/reliability.md) ------------------------------------


def saved_with_catalog(tmp_path, catalog):
    model = tiny_model(num_items=len(catalog))
    model.set_catalog(catalog)
    model.save_pretrained(tmp_path)
    return model


def test_config_records_the_catalog_fingerprint_and_a_reordered_catalog_is_refused(tmp_path, catalog):
    saved_with_catalog(tmp_path, catalog)
    assert AutoConfig.from_pretrained(tmp_path).catalog_fingerprint == catalog.fingerprint
    reordered = ItemCatalog(catalog.item_ids[::-1], catalog.texts[::-1])  # same items, same size, other order
    reordered.save(tmp_path)
    with pytest.raises(ValueError, match=r"item_catalog\.json does not match this model's catalog"):
        AutoModel.from_pretrained(tmp_path)


def test_a_trained_model_refuses_another_catalog_and_stays_as_it_was(catalog):
    model = tiny_model(num_items=len(catalog))
    model.set_catalog(catalog)
    other = ItemCatalog([f"x{k}" for k in range(len(catalog))], catalog.texts)
    with pytest.raises(ValueError, match="does not match this model's catalog"):
        model.set_catalog(other)
    assert model.catalog is catalog and model.config.catalog_fingerprint == catalog.fingerprint
    model.set_catalog(ItemCatalog(catalog.item_ids, [text + " x" for text in catalog.texts]))  # texts may change


def test_saving_without_a_catalog_removes_an_older_models_catalog(tmp_path, catalog):
    saved_with_catalog(tmp_path, catalog)
    tiny_model(num_items=len(catalog), seed=3).save_pretrained(tmp_path)  # a new model, no catalog
    assert not (tmp_path / "item_catalog.json").exists()
    assert AutoModel.from_pretrained(tmp_path).catalog is None


@pytest.mark.parametrize("content", ['{"items": [{"index": 0, "item_id": "i0", "te', "[]", '{"items": [{"index": 0}]}'])
def test_a_corrupt_catalog_file_is_named_before_the_weights_are_loaded(tmp_path, catalog, content, monkeypatch):
    saved_with_catalog(tmp_path, catalog)
    (tmp_path / "item_catalog.json").write_text(content)
    loaded = []
    # the weights are read by transformers' from_pretrained, which the model's own reaches through its base class
    monkeypatch.setattr(IAMPreTrainedModel, "from_pretrained", classmethod(lambda *a, **k: loaded.append(1)))
    with pytest.raises(ValueError, match=r"item_catalog\.json.*(not a valid item catalog|record 0)"):
        IAMForCausalRecommendation.from_pretrained(tmp_path)
    assert not loaded  # refused before transformers read any weight


def test_a_missing_catalog_file_is_a_loud_warning(tmp_path, catalog, caplog):
    saved_with_catalog(tmp_path, catalog)
    (tmp_path / "item_catalog.json").unlink()
    from transformers.utils import logging as hf_logging

    hf_logging.enable_propagation()
    try:
        model = AutoModel.from_pretrained(tmp_path)
    finally:
        hf_logging.disable_propagation()
    assert model.catalog is None
    assert "item_catalog.json is missing" in caplog.text


# -- forward / recommend refuse what would be silently wrong ------------------------------------


def test_recommend_never_returns_an_excluded_item(catalog):
    model = tiny_model()
    model.set_catalog(catalog)
    excluded = list(range(17))  # 3 items left
    top = model.recommend(random_ids(), item_segment_ids=SEGMENTS, k=3, exclude_item_ids=[excluded])
    assert sorted(top.indices[0].tolist()) == [17, 18, 19] and torch.isfinite(top.scores).all()
    with pytest.raises(ValueError, match=r"k=4 but user 0 has only 3 items left after excluding 17"):
        model.recommend(random_ids(), item_segment_ids=SEGMENTS, k=4, exclude_item_ids=[excluded])
    with pytest.raises(ValueError, match="excluded item indices must be"):
        model.recommend(random_ids(), item_segment_ids=SEGMENTS, k=2, exclude_item_ids=[[-2]])


@pytest.mark.parametrize("k", [0, 21, 2.0, True])
def test_recommend_k_out_of_range(k):
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 20\]"):
        tiny_model().recommend(random_ids(), item_segment_ids=SEGMENTS, k=k)


def test_forward_refuses_an_all_padding_row_and_bad_ids():
    model = tiny_model()
    input_ids = random_ids().repeat(2, 1)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1] = 0
    with pytest.raises(ValueError, match=r"attention_mask rows \[1\] are all padding"):
        model(input_ids=input_ids, attention_mask=attention_mask, item_segment_ids=SEGMENTS.repeat(2, 1))
    with pytest.raises(ValueError, match=r"input_ids must be token ids in \[0, 160\)"):
        model(input_ids=torch.full_like(SEGMENTS, 160), item_segment_ids=SEGMENTS)
    with pytest.raises(ValueError, match="item_segment_ids must be >= 0"):
        model(input_ids=random_ids(), item_segment_ids=-SEGMENTS)


def test_an_item_with_no_tokens_is_named_instead_of_making_every_embedding_nan(catalog):
    model = tiny_model()
    model.set_catalog(catalog)
    before = model.adapter.item_embeddings.weight.clone()
    token_ids = [[5, 6]] * 20
    token_ids[4] = []
    with pytest.raises(ValueError, match=r"catalog indices \[4\], items \['i4'\]"):
        model.init_item_embeddings_from_text(token_ids)
    torch.testing.assert_close(model.adapter.item_embeddings.weight, before)


def test_rows_read_from_text_are_each_items_own_whatever_the_batches(catalog):
    # read shortest first in batches: an item's row must not depend on the items batched with it or their order
    generator = torch.Generator().manual_seed(0)
    token_ids = [torch.randint(3, 150, (1 + index % 7,), generator=generator).tolist() for index in range(20)]
    model = tiny_model()
    model.set_catalog(catalog)
    model.init_item_embeddings_from_text(token_ids, batch_size=1)
    alone = model.adapter.item_embeddings.weight.clone()
    order = torch.randperm(20, generator=generator).tolist()
    model.init_item_embeddings_from_text([token_ids[index] for index in order], batch_size=6)
    torch.testing.assert_close(model.adapter.item_embeddings.weight, alone[order])
    assert not torch.allclose(alone[0], alone[7])  # same length, other tokens: rows that say something
