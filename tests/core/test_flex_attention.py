"""``iam_flex`` (FlexAttention, block-sparse masks) against ``iam_sdpa`` on CPU, where flex runs un-compiled."""

from __future__ import annotations

import warnings

import pytest
import torch

from transformers_iam import IAMDataCollator
from transformers_iam.core import flex_attention

from ..testing_utils import BACKBONES, LAYOUTS, collator_kwargs, same_weights_with, tiny_model

EXAMPLES = [{"history": ["i3", "i4"], "target": "i1"}, {"history": [f"i{k}" for k in range(9)], "target": "i2"}]


@pytest.fixture(autouse=True)
def quiet_unfused_flex():
    # "flex_attention called without torch.compile()": expected on CPU, where the tests run it un-compiled
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


@pytest.fixture
def collator(tokenizer, catalog):
    return IAMDataCollator(tokenizer, catalog, max_length=64, **collator_kwargs())


def run(model, batch):
    with torch.no_grad():
        return model(**batch, output_hidden_states=True)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_flex_matches_sdpa(backbone, layout, collator):
    model = tiny_model(backbone, iam_layout=layout)
    flex = same_weights_with(model, attn_implementation="flex_attention")
    assert flex.config._attn_implementation == "iam_flex" and flex.model.config._attn_implementation == "iam_flex"
    for padding_side in ("left", "right"):
        collator.padding_side = padding_side
        batch = collator(EXAMPLES)
        assert not batch["attention_mask"].all()  # the short history is padded
        ours, reference = run(flex, batch), run(model, batch)
        torch.testing.assert_close(ours.logits, reference.logits, atol=1e-4, rtol=1e-4)
        real = batch["attention_mask"].bool()
        for layer, (a, b) in enumerate(zip(ours.hidden_states, reference.hidden_states)):
            # real tokens: the padding states of full layers follow each backend's own empty-row convention
            torch.testing.assert_close(a[real], b[real], atol=1e-4, rtol=1e-4, msg=f"{padding_side}, layer {layer}")
        assert all(torch.isfinite(states).all() for states in ours.hidden_states)


def test_block_mask_is_built_once_per_kind_and_forward(collator, monkeypatch):
    builds = []
    original = flex_attention.create_block_mask

    def counting(mask_mod, B, H, Q_LEN, KV_LEN, device=None):
        builds.append((B, Q_LEN, KV_LEN))
        return original(mask_mod, B=B, H=H, Q_LEN=Q_LEN, KV_LEN=KV_LEN, device=device)

    monkeypatch.setattr(flex_attention, "create_block_mask", counting)
    model = tiny_model("llama", num_layers=6, iam_layout="hatllm", attn_implementation="flex_attention")  # 2+2+2
    collator.padding_side = "left"
    batch = collator(EXAMPLES)
    run(model, batch)
    assert len(builds) == 3  # intra, full, inter: each shared by the two layers of its kind
    run(model, batch)
    assert len(builds) == 6  # a new forward builds its own


def test_flex_masks_match_the_dense_semantics():
    """The mask_mod, densified, is exactly what iam_sdpa builds (padding query rows included)."""
    from transformers_iam.core.attention import ItemSegments

    segments = torch.tensor([[0, 0, 0, 1, 1, 2, 0], [0, 1, 1, 2, 2, 3, 0]])
    attention_mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    base = flex_attention.iam_flex_mask(batch_size=2, q_length=7, kv_length=7, attention_mask=attention_mask)
    dense_base = attention_mask.bool()[:, None, None, :] & torch.ones(7, 7, dtype=torch.bool).tril()
    for layer_type in ("intra", "inter", "full"):
        mod = flex_attention.item_aware_mask_mod(layer_type, base, segments, 7, 7)
        mod = flex_attention._with_diagonal_for_empty_rows(mod, 2, 7, 7, "cpu")
        b, q, k = torch.arange(2)[:, None, None], torch.arange(7)[None, :, None], torch.arange(7)[None, None, :]
        ours = mod(b, torch.zeros((), dtype=torch.long), q, k).expand(2, 7, 7)
        expected = ItemSegments(segments).mask_for(layer_type, dense_base, 7, 7, None)[:, 0]
        if layer_type == "full":  # iam_sdpa leaves full layers to stock SDPA; flex opens the empty rows the same way
            expected = expected | (~expected.any(-1, keepdim=True) & torch.eye(7, dtype=torch.bool))
        assert torch.equal(ours, expected), layer_type


def test_training_on_cpu_is_refused_clearly(collator):
    model = tiny_model(attn_implementation="flex_attention").train()
    batch = collator(EXAMPLES)
    with pytest.raises(NotImplementedError, match='no backward on CPU.*attn_implementation="sdpa"'):
        model(**batch).loss.backward()


def test_flex_rejects_a_ready_4d_mask():
    model = tiny_model(attn_implementation="flex_attention")
    input_ids = torch.tensor([[5, 6, 7, 8]])
    with pytest.raises(ValueError, match="builds its own masks"):
        with torch.no_grad():
            model.model(
                input_ids=input_ids,
                attention_mask=torch.ones(1, 1, 4, 4, dtype=torch.bool),
                item_segment_ids=torch.tensor([[0, 1, 1, 0]]),
            )
