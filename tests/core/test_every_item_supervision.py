"""Every-item supervision: a target after every item, read where no later item (nor the target) can leak in."""

from __future__ import annotations

import pytest
import torch

from transformers_iam import IAMDataCollator
from transformers_iam.core import losses
from transformers_iam.core.readout import item_end_positions
from transformers_iam.recsys.evaluation import final_targets

from ..testing_utils import LAYOUTS, collator_kwargs, same_weights_with, tiny_model

HISTORY = ["i3", "i1", "i8", "i5", "i10"]


def make_collator(tokenizer, catalog, **kwargs) -> IAMDataCollator:
    values = dict(max_length=64, every_item_targets=True, **collator_kwargs())
    return IAMDataCollator(tokenizer, catalog, **{**values, **kwargs})


def test_targets_follow_the_items_kept_after_truncation(tokenizer, catalog):
    collator = make_collator(tokenizer, catalog, max_history_items=3, padding_side="left")
    batch = collator([{"history": HISTORY, "target": "i2"}, {"history": ["i4"], "target": "i6"}])
    index = catalog.index_of
    # kept: i8, i5, i10 -> after i8 comes i5, after i5 i10, after i10 the target
    assert batch["labels"].tolist() == [[index("i5"), index("i10"), index("i2")], [index("i6"), -100, -100]]
    assert final_targets(batch["labels"]).tolist() == [index("i2"), index("i6")]
    assert batch["history_item_indices"][0].tolist() == [index(item) for item in HISTORY]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_the_state_after_item_i_sees_nothing_after_it(layout, padding_side, tokenizer, catalog):
    collator = make_collator(tokenizer, catalog, padding_side=padding_side)
    model = same_weights_with(tiny_model(num_layers=6, iam_layout=layout), supervision="every_item")
    for cut in range(1, len(HISTORY)):
        original = collator([{"history": HISTORY, "target": "i2"}])
        changed = collator([{"history": HISTORY[:cut] + ["i19", "i17", "i0"][: len(HISTORY) - cut], "target": "i9"}])
        with torch.no_grad():
            states = [model(**batch, output_hidden_states=True).hidden_states[-1] for batch in (original, changed)]
        ends = [item_end_positions(b["item_segment_ids"], b["attention_mask"])[0, cut - 1] for b in (original, changed)]
        torch.testing.assert_close(states[0][0, ends[0]], states[1][0, ends[1]], msg=f"{layout}: item {cut} leaked")
    # and what it reads does depend on the items before it
    earlier = collator([{"history": ["i19"] + HISTORY[1:], "target": "i2"}])
    with torch.no_grad():
        a = model(**collator([{"history": HISTORY, "target": "i2"}])).logits
        b = model(**earlier).logits
    assert not torch.allclose(a, b)


def test_loss_is_the_mean_cross_entropy_over_every_target(tokenizer, catalog):
    collator = make_collator(tokenizer, catalog, padding_side="right")
    model = same_weights_with(tiny_model(num_layers=4), supervision="every_item")
    examples = [{"history": HISTORY, "target": "i2"}, {"history": ["i4", "i7"], "target": "i6"}]
    batch = collator(examples)
    output = model(**batch, output_hidden_states=True)
    last = output.hidden_states[-1]
    ends = item_end_positions(batch["item_segment_ids"], batch["attention_mask"])
    losses = []
    for row in range(2):
        for column, label in enumerate(batch["labels"][row].tolist()):
            if label != -100:
                logits = model.adapter(last[row, ends[row, column]])
                losses.append(torch.nn.functional.cross_entropy(logits[None], torch.tensor([label])))
    assert len(losses) == 7
    torch.testing.assert_close(output.loss, torch.stack(losses).mean())
    # the logits returned are those read after the last item: what evaluation ranks
    torch.testing.assert_close(output.logits[1], model.adapter(last[1, ends[1, 1]]))


def test_evaluation_scores_the_every_item_loss_a_chunk_of_targets_at_a_time(tokenizer, catalog, monkeypatch):
    # the Trainer's evaluation computes this loss: over a million items one [targets x catalog] matrix does not fit
    collator = make_collator(tokenizer, catalog)
    model = same_weights_with(tiny_model(num_layers=4), supervision="every_item")
    batch = collator([{"history": HISTORY, "target": "i2"}, {"history": ["i4", "i7"], "target": "i6"}])
    whole = model(**batch).loss  # with a gradient: one matrix
    monkeypatch.setattr(losses, "EVALUATION_LOSS_SCORES", 2 * len(catalog))  # 2 of the 7 targets a chunk
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).loss, whole.detach())


def test_every_item_labels_need_the_item_readout(tokenizer, catalog):
    batch = make_collator(tokenizer, catalog)([{"history": HISTORY, "target": "i2"}])
    with pytest.raises(ValueError, match="need config.supervision=.every_item."):
        tiny_model()(**batch)
