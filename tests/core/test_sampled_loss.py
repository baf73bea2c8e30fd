"""The sampled softmax (``IAMConfig.num_sampled_negatives``): what it scores, its logQ correction, and that a model
trained with it learns what the full cross-entropy learns."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import Trainer

from transformers_iam import IAMDataCollator, IAMForCausalRecommendation
from transformers_iam.core.adapter import IAMRecommendationAdapter
from transformers_iam.core.losses import catalog_cross_entropy, draw_negatives, sampled_softmax_cross_entropy

from ..testing_utils import collator_kwargs, next_item_dataset, tiny_model
from .test_training import mean_loss, quiet_training_arguments

HIDDEN = 32


def adapter_scoring(item: int, margin: float, num_items: int = 20) -> IAMRecommendationAdapter:
    """An adapter whose scores are ``margin`` for ``item`` and 0 for every other item, whatever the state."""
    model = tiny_model(num_items=num_items)
    adapter = model.adapter
    with torch.no_grad():
        adapter.item_embeddings.weight.zero_()
        adapter.item_embeddings.bias.zero_()
        adapter.item_embeddings.bias[item] = margin
    return adapter


def test_a_drawn_copy_of_the_rows_own_target_is_not_a_negative():
    # every row has target 3, scored far above the rest, and item 3 is drawn for sure (19 of 20 items, item 3 a hundred
    # times as frequent): a right loss is near 0; counting the drawn copy as a negative would give at least log(2)
    adapter = adapter_scoring(item=3, margin=30.0)
    log_frequency = torch.zeros(20)
    log_frequency[3] = math.log(100)
    generator = torch.Generator().manual_seed(0)
    loss = sampled_softmax_cross_entropy(
        adapter, torch.randn(4, HIDDEN), torch.tensor([3, 3, 3, 3]), 19, log_frequency, generator=generator
    )
    assert float(loss) < 1e-3


def test_every_item_as_a_negative_gives_the_full_cross_entropy():
    torch.manual_seed(0)
    adapter = tiny_model(num_items=20).adapter
    with torch.no_grad():
        adapter.item_embeddings.weight.normal_()
        adapter.item_embeddings.bias.normal_()
    states, labels = torch.randn(6, HIDDEN), torch.tensor([0, 3, 3, 7, 19, 12])
    log_frequency = torch.randn(20)  # whatever the frequencies: every item is drawn for sure
    full = catalog_cross_entropy(adapter, adapter(states), None, labels, None, 20)
    sampled = sampled_softmax_cross_entropy(adapter, states, labels, 20, log_frequency)
    torch.testing.assert_close(sampled, full)


def test_negatives_are_distinct_and_weighted_by_their_inclusion_probability():
    # 50 distinct of 200 items, the first 10 twenty times as frequent. Weighting each drawn item by 1 / its inclusion
    # probability estimates any sum over the catalog without bias: summed over the draws of many steps, the weights of
    # each group of items average to its size. Weights from the expected count of draws instead (1 / (draws x q))
    # give the popular group 3.9 where it has 10 items, and the others 313 where they are 190
    log_frequency = torch.zeros(200)
    log_frequency[:10] = 3.0
    generator = torch.Generator().manual_seed(0)
    weights = torch.zeros(200)
    steps = 1000
    for _ in range(steps):
        items, log_inclusion = draw_negatives(log_frequency, 50, generator)
        assert items.unique().numel() == 50
        weights[items] += (-log_inclusion).exp()
    assert abs(float(weights[:10].sum()) / steps - 10) < 0.5
    assert abs(float(weights[10:].sum()) / steps - 190) < 0.02 * 190  # the 50th priority as threshold gives 195


@pytest.mark.parametrize("target", [0, 1], ids=["popular target", "rare target"])
def test_a_rows_loss_estimates_the_full_softmax_whatever_its_targets_popularity(target):
    # equal scores: the full cross-entropy is log(20) for every target. With 10 negatives drawn by a skewed frequency,
    # the corrected loss comes close to it on average, for a popular target and a rare one alike; uncorrected it
    # would be log(1 + 10) = 2.40
    adapter = adapter_scoring(item=0, margin=0.0)
    log_frequency = torch.zeros(20)
    log_frequency[0] = 3.0
    generator = torch.Generator().manual_seed(0)
    losses = [
        float(
            sampled_softmax_cross_entropy(
                adapter, torch.randn(1, HIDDEN), torch.tensor([target]), 10, log_frequency, generator=generator
            )
        )
        for _ in range(400)
    ]
    assert abs(sum(losses) / len(losses) - math.log(20)) < 0.05


def test_a_zero_frequency_is_refused_by_name():
    log_frequency = torch.zeros(20)
    log_frequency[5] = float("-inf")
    with pytest.raises(ValueError, match="log_frequency must be finite"):
        draw_negatives(log_frequency, 8)


def test_gradients_reach_only_the_rows_scored():
    adapter = adapter_scoring(item=0, margin=0.0, num_items=500)
    generator = torch.Generator().manual_seed(0)
    loss = sampled_softmax_cross_entropy(
        adapter, torch.randn(4, HIDDEN), torch.tensor([1, 2, 3, 4]), 8, torch.zeros(500), generator=generator
    )
    loss.backward()
    touched = (adapter.item_embeddings.weight.grad.abs().sum(1) > 0).sum()
    assert 4 <= int(touched) <= 12  # the 4 targets and at most 8 sampled items of 500


def test_training_returns_no_catalog_scores_and_evaluation_ranks_the_whole_catalog(tokenizer, catalog, tmp_path):
    model = tiny_model(num_layers=2, num_items=len(catalog), num_sampled_negatives=8)
    model.set_catalog(catalog)
    model.init_sampling_frequency(torch.arange(len(catalog), dtype=torch.float32))
    collator = IAMDataCollator(tokenizer, catalog, max_length=64, **collator_kwargs())
    batch = collator(list(next_item_dataset(catalog, 4, seed=0)))
    model.train()
    output = model(**batch)
    assert output.logits is None and output.loss.requires_grad
    model.eval()
    with torch.no_grad():
        output = model(**batch)
    assert output.logits.shape == (4, len(catalog)) and output.loss is not None  # the full cross-entropy
    model.save_pretrained(tmp_path)
    reloaded = IAMForCausalRecommendation.from_pretrained(tmp_path)
    assert reloaded.config.num_sampled_negatives == 8
    torch.testing.assert_close(reloaded.item_log_frequency, model.item_log_frequency)


def test_a_model_trained_with_sampled_negatives_learns_the_task(tmp_path, tokenizer, catalog):
    # the task of test_training.py, whose catalog has 20 items: 16 negatives drawn a step (at 20 or more it would be
    # the full cross-entropy; at 8 this toy learns too slowly for the bound on some seeds: 1.96 of 3.01 on seed 1); a
    # wrong positive column would not learn it
    model = tiny_model(num_layers=2, num_items=len(catalog), num_sampled_negatives=16)
    model.set_catalog(catalog)
    collator = IAMDataCollator(tokenizer, catalog, max_length=64, **collator_kwargs())
    train, held_out = next_item_dataset(catalog, 256, seed=0), next_item_dataset(catalog, 64, seed=1)
    before = mean_loss(model, collator, held_out)  # the full cross-entropy, in eval mode
    args = quiet_training_arguments(tmp_path, learning_rate=3e-3)  # as the sparse-gradient test: 1e-2 swings by seed
    Trainer(model=model, args=args, train_dataset=train, data_collator=collator).train()
    after = mean_loss(model, collator, held_out)
    print(f"held-out full cross-entropy {before:.3f} -> {after:.3f}")
    assert after < 0.6 * before, (before, after)


def test_a_checkpoint_saved_without_frequencies_loads_them_uniform(tmp_path):
    # fine-tuning a full-loss checkpoint with the sampled loss: the buffer is not in the file and must not be left as
    # uninitialised memory
    tiny_model(num_items=20).save_pretrained(tmp_path)
    sampled = IAMForCausalRecommendation.from_pretrained(tmp_path, num_sampled_negatives=8)
    assert torch.equal(sampled.item_log_frequency, torch.zeros(20))
