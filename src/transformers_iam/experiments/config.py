"""Every knob of a run and the named presets (cpu-quick, gpu), saved as ``experiment.json`` beside a checkpoint.

Example:
    >>> config = ExperimentConfig.from_preset("cpu-quick", output_dir="runs/quick")
    >>> config.num_backbone_layers, config.freeze_bottom_layers
    (6, 3)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..core.configuration_iam import layer_types_for_layout

EXPERIMENT_FILE = "experiment.json"


@dataclass
class ExperimentConfig:
    """Every knob of a run; saved as ``experiment.json`` next to the checkpoint."""

    preset: str = "cpu-quick"
    output_dir: str = "runs/iam-ml100k"
    # data
    dataset_dir: str | None = None  # RecBole atomic files; default: ml-100k from the recbole wheel
    interactions_file: str | None = None  # or a plain table (CSV/JSONL) ...
    catalog_file: str | None = None  # ... with its catalog table
    text_template: str | None = None  # item text from catalog columns, e.g. "{title} | {genres}"
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
    warmup_steps: int = 20
    evaluations: int = 2  # validation passes during training
    evaluate_before_training: bool = True  # one more validation pass at step 0 (the curve's starting point)
    max_steps: int = -1
    seed: int = 0
    bf16: bool = False
    command: str = ""
    notes: list[str] = field(default_factory=list)

    PRESETS = {
        # <= 15 minutes end to end on 2 CPU cores: 6 of 30 layers (the 3 intra layers kept as pretrained),
        # 10-item histories, three prefixes per user, item embeddings fixed at their text init.
        "cpu-quick": dict(
            num_backbone_layers=6,
            max_history=10,
            train_examples_per_user=3,
            freeze_embeddings=True,
            freeze_item_embeddings=True,
            freeze_bottom_layers=3,
            epochs=1.0,
            batch_size=8,
            learning_rate=2e-4,
            evaluations=2,
            evaluate_before_training=False,
        ),
        # A GPU: the full backbone, 20-item histories, every prefix, several epochs.
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

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> ExperimentConfig:
        if preset not in cls.PRESETS:
            raise ValueError(f"preset must be one of {sorted(cls.PRESETS)}, got {preset!r}")
        values = {**cls.PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
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
