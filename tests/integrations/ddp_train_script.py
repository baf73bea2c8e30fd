"""Launched by tests/integrations/test_multiprocess.py with `accelerate launch --multi_gpu --num_processes 2`: the
ordinary Trainer + IAMDataCollator code, nothing DDP-specific, on a tiny model and a synthetic catalog, on the CPU
(`use_cpu=True`, gloo) whether or not the machine has GPUs."""

from __future__ import annotations

import json
import os
import sys

import torch
from transformers import Trainer, TrainingArguments

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.testing_utils import (  # noqa: E402
    catalog_tokenizer,
    collator_kwargs,
    next_item_dataset,
    synthetic_catalog,
    tiny_model,
)
from transformers_iam import IAMDataCollator  # noqa: E402


class RecordingCollator(IAMDataCollator):
    """Remembers which examples this process trained on."""

    seen: list[str] = []

    def __call__(self, examples):
        self.seen.extend(example["user_id"] for example in examples)
        return super().__call__(examples)


def main(output_dir: str) -> None:
    catalog = synthetic_catalog()
    tokenizer = catalog_tokenizer(catalog)
    dataset = next_item_dataset(catalog, 64, seed=0)
    dataset = dataset.add_column("user_id", [f"u{index}" for index in range(len(dataset))])
    collator = RecordingCollator(tokenizer, catalog, max_length=64, **collator_kwargs())
    model = tiny_model(num_layers=2, num_items=len(catalog))
    model.set_catalog(catalog)
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=4,
        max_steps=4,
        learning_rate=5e-3,
        remove_unused_columns=False,
        label_names=["labels"],
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        ddp_backend="gloo",
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    trainer.train()
    rank = trainer.args.process_index
    with open(os.path.join(output_dir, f"seen_rank{rank}.json"), "w") as handle:
        json.dump({"world_size": trainer.args.world_size, "users": collator.seen}, handle)
    trainer.save_model(os.path.join(output_dir, "checkpoint"))  # the main process writes it
    if trainer.args.should_save:
        with torch.no_grad():
            torch.save(trainer.model.adapter.item_embeddings.bias.clone(), os.path.join(output_dir, "bias.pt"))


if __name__ == "__main__":
    main(sys.argv[1])
