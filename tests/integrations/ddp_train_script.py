"""Launched by tests/integrations/test_multiprocess.py with `accelerate launch --multi_gpu --num_processes 2`: the
ordinary Trainer + IAMDataCollator code, nothing DDP-specific, on a tiny model and a synthetic catalog, on the CPU
(`use_cpu=True`, gloo) whether or not the machine has GPUs.

`ddp_train_script.py OUTPUT_DIR deepspeed`, launched with `--config_file examples/accelerate/deepspeed_zero*.yaml`:
the same code under DeepSpeed ZeRO, on the sampled loss (`num_sampled_negatives`)."""

from __future__ import annotations

import contextlib
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


def main(output_dir: str, engine: str = "ddp") -> None:
    catalog = synthetic_catalog()
    tokenizer = catalog_tokenizer(catalog)
    dataset = next_item_dataset(catalog, 64, seed=0)
    dataset = dataset.add_column("user_id", [f"u{index}" for index in range(len(dataset))])
    collator = RecordingCollator(tokenizer, catalog, max_length=64, **collator_kwargs())
    # the sharded engines are tested on the sampled loss: its head indexes the item embeddings outside the adapter's
    # forward (`sampled_softmax_cross_entropy`), the access a sharding wrapper could break
    overrides = {} if engine == "ddp" else {"num_sampled_negatives": 8}
    model = tiny_model(num_layers=2, num_items=len(catalog), **overrides)
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
        # DeepSpeed: the device left to it, as on GPUs (DeepSpeed sets up the process group; on a machine without GPUs
        # it picks its CPU accelerator and gloo); `use_cpu=True` would run ZeRO too, over accelerate's gloo group
        use_cpu=engine == "ddp",
        disable_tqdm=True,
        ddp_backend="gloo",
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    trainer.train()
    rank = trainer.args.process_index
    record = {"world_size": trainer.args.world_size, "users": collator.seen}
    record["distributed_type"] = str(trainer.accelerator.distributed_type)
    # what this process holds of each parameter: its partition (ZeRO-3: `ds_tensor`) or the whole of it
    record["local_shapes"] = {
        name: list(getattr(parameter, "ds_tensor", parameter).shape)
        for name, parameter in trainer.model_wrapped.named_parameters()
    }
    optimizer = getattr(trainer.model_wrapped, "optimizer", None)  # DeepSpeed's engine: its ZeRO optimizer
    if optimizer is not None and hasattr(optimizer, "single_partition_of_fp32_groups"):  # ZeRO-1/2
        # the fp32 master weights (and Adam's states beside them) this process holds: its partition only
        record["optimizer_partition_numel"] = sum(part.numel() for part in optimizer.single_partition_of_fp32_groups)
    elif optimizer is not None and hasattr(optimizer, "fp32_partitioned_groups_flat"):  # ZeRO-3
        record["optimizer_partition_numel"] = sum(part.numel() for part in optimizer.fp32_partitioned_groups_flat)
    record["parameter_numel"] = sum(
        getattr(parameter, "ds_numel", parameter.numel()) for parameter in trainer.model_wrapped.parameters()
    )
    with open(os.path.join(output_dir, f"seen_rank{rank}.json"), "w") as handle:
        json.dump(record, handle)
    trainer.save_model(os.path.join(output_dir, "checkpoint"))  # the main process writes it
    bias = trainer.model.adapter.item_embeddings.bias
    with torch.no_grad(), gathered(bias):  # ZeRO-3: every process takes part in gathering the partitioned bias
        bias = bias.detach().clone()
    if trainer.args.should_save:
        torch.save(bias, os.path.join(output_dir, "bias.pt"))
    # leave together and close the group: a process that exits with its gloo group alive can abort in the group's
    # threads ("terminate called without an active exception"), which a loaded machine made happen in CI
    trainer.accelerator.wait_for_everyone()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def gathered(parameter: torch.nn.Parameter):
    """The whole parameter inside the context: ZeRO-3 gathers its partitions; otherwise it is whole already."""
    if not hasattr(parameter, "ds_id"):
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters([parameter])


if __name__ == "__main__":
    main(*sys.argv[1:])
