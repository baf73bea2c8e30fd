"""A few HF Trainer steps with IAMDataCollator lower the loss on a small synthetic catalog."""

from __future__ import annotations

import pytest
import torch
from transformers import Trainer, TrainingArguments

from transformers_iam import IAMDataCollator

from ..testing_utils import collator_kwargs, next_item_dataset, tiny_model


def mean_loss(model, collator, dataset) -> float:
    model.eval()
    with torch.no_grad():
        return float(model(**collator(list(dataset))).loss)


def quiet_training_arguments(output_dir, **overrides) -> TrainingArguments:
    """The few-step CPU training of these tests: 15 epochs at a high learning rate, nothing saved or reported."""
    values = dict(
        per_device_train_batch_size=16,
        num_train_epochs=15,
        learning_rate=1e-2,
        remove_unused_columns=False,
        label_names=["labels"],
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    return TrainingArguments(output_dir=str(output_dir), **{**values, **overrides})


@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_trainer_lowers_the_loss(tmp_path, tokenizer, catalog, gradient_checkpointing):
    model = tiny_model(num_layers=2, num_items=len(catalog))
    collator = IAMDataCollator(tokenizer, catalog, max_length=64, **collator_kwargs())
    train, held_out = next_item_dataset(catalog, 256, seed=0), next_item_dataset(catalog, 64, seed=1)
    before = mean_loss(model, collator, held_out)
    args = quiet_training_arguments(
        tmp_path, gradient_accumulation_steps=2, activation_checkpointing=gradient_checkpointing
    )
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collator)
    result = trainer.train()
    after = mean_loss(model, collator, held_out)
    assert result.global_step == 120
    assert model.is_activation_checkpointing == gradient_checkpointing
    print(f"held-out loss {before:.3f} -> {after:.3f}")
    assert after < 0.6 * before, (before, after)
