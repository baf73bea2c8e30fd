"""A run's arguments together (:class:`RunArguments`: model, data and training, and the preset they started from),
what ``experiment.json`` records of them, and the command line of ``examples/finetune.py`` that gives them: a preset,
then a ``--config`` file (YAML or JSON), then flags, each checked by its dataclass (``arguments.py``).

Example:
    >>> run = RunArguments.from_preset("cpu-quick", output_dir="runs/quick", max_history=20)
    >>> run.model.num_backbone_layers, run.model.freeze_bottom_layers, run.data.max_history
    (4, 3, 20)
    >>> run.training.num_train_epochs, run.model.layer_types(4)
    (5.0, ['intra', 'intra', 'intra', 'inter'])
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
from dataclasses import dataclass, field

from huggingface_hub.errors import StrictDataclassError
from transformers import HfArgumentParser

from .arguments import DataArguments, ModelArguments, RecommendationTrainingArguments
from .presets import DEFAULT_PRESET, PRESETS

EXPERIMENT_FILE = "experiment.json"

ARGUMENT_CLASSES = (ModelArguments, DataArguments, RecommendationTrainingArguments)
# what a resumed run may change without being another run
RESUMABLE_DIFFERENCES = ("command", "notes", "training.resume", "data.sasrec_metrics")


def _field_names(cls: type) -> set[str]:
    return {item.name for item in dataclasses.fields(cls) if item.init}


def preset_values(preset: str | None, given: dict) -> dict:
    """A preset's values with ``given`` on top. A preset's list of layer kinds is for its own depth and layout: a
    layout or an ablation given by name, or another depth, replaces it."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    values = dict(PRESETS[preset]) if preset is not None else {}
    depth = values.get("num_backbone_layers")
    named = given.get("iam_layout") is not None or given.get("ablation") is not None
    if "iam_layer_types" not in given and (named or given.get("num_backbone_layers", depth) != depth):
        values.pop("iam_layer_types", None)
    return {**values, **given}


def default_output_dir(preset: str | None, values: dict) -> str:
    """``runs/<preset>-<layout or ablation>[-lora][-<dataset>][-cold<share> or -new-arrivals]``."""
    from .report import data_tag

    name = values.get("ablation") or values.get("iam_layout") or "stacked"
    return (
        f"runs/{preset or 'custom'}-{name}"
        + ("-lora" if values.get("lora") else "")
        + data_tag(values.get("dataset"), values.get("cold_items"), values.get("cold_item_pattern"))
    )


@dataclass
class RunArguments:
    """The arguments of one run: model, data and training, the preset they started from, the command that gave
    them and notes the run adds (a smoke run, the cold-item protocol)."""

    model: ModelArguments
    data: DataArguments
    training: RecommendationTrainingArguments
    preset: str | None = DEFAULT_PRESET
    command: str = ""
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_preset(cls, preset: str | None = DEFAULT_PRESET, **values) -> RunArguments:
        """The preset's values (``None``: the dataclasses' defaults only) with ``values`` on top, each routed to its
        dataclass by name and checked there. ``output_dir`` defaults to ``runs/<preset>-<layout>``."""
        values = preset_values(preset, values)
        values.setdefault("output_dir", default_output_dir(preset, values))
        known = set().union(*(_field_names(kind) for kind in ARGUMENT_CLASSES))
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown arguments {unknown}: see `python examples/finetune.py --help`")
        model, data, training = (
            kind(**{name: value for name, value in values.items() if name in _field_names(kind)})
            for kind in ARGUMENT_CLASSES
        )
        return cls(model, data, training, preset)

    def replace(self, **values) -> RunArguments:
        """A copy with ``values`` (any argument, by name) replaced, checked again by its dataclass.

        Example:
            >>> RunArguments.from_preset("cpu-quick").replace(resume=True, max_history=10).data.max_history
            10
        """
        unknown = sorted(set(values) - set().union(*(_field_names(kind) for kind in ARGUMENT_CLASSES)))
        if unknown:
            raise ValueError(f"unknown arguments {unknown}: see `python examples/finetune.py --help`")
        parts = [
            dataclasses.replace(part, **{name: value for name, value in values.items() if name in _field_names(kind)})
            for part, kind in zip((self.model, self.data, self.training), ARGUMENT_CLASSES)
        ]
        return RunArguments(*parts, self.preset, self.command, list(self.notes))

    def to_dict(self) -> dict:
        """What ``experiment.json`` holds: each dataclass's fields (training: those that differ from its defaults)."""
        defaults = RecommendationTrainingArguments(output_dir=self.training.output_dir)
        training = {
            name: getattr(self.training, name)
            for name in sorted(_field_names(RecommendationTrainingArguments))
            if getattr(self.training, name) != getattr(defaults, name) or name == "output_dir"
        }
        return json.loads(
            json.dumps(
                {
                    "preset": self.preset,
                    "model": dataclasses.asdict(self.model),
                    "data": dataclasses.asdict(self.data),
                    "training": training,
                    "command": self.command,
                    "notes": list(self.notes),
                },
                default=str,
            )
        )

    @classmethod
    def from_dict(cls, saved: dict) -> RunArguments:
        """The arguments an ``experiment.json`` records (``to_dict``)."""
        if "model" not in saved or "training" not in saved:
            raise ValueError(
                "this experiment.json was written by transformers-iam 0.1.0 (one flat ExperimentConfig): evaluate "
                "that run with 0.1.0, or load its checkpoint with AutoModel.from_pretrained"
            )
        run = cls(
            ModelArguments(**saved["model"]),
            DataArguments(**saved["data"]),
            RecommendationTrainingArguments(**saved["training"]),
            saved.get("preset"),
            saved.get("command", ""),
            list(saved.get("notes", [])),
        )
        return run

    def differences(self, saved: dict) -> list[str]:
        """The settings in which ``saved`` (an ``experiment.json``) records another run than this one."""
        current = self.to_dict()
        differing = []
        for section in ("preset", "model", "data", "training"):
            old, new = saved.get(section), current.get(section)
            if not isinstance(new, dict) or not isinstance(old, dict):
                if old != new:
                    differing.append(section)
                continue
            for key in sorted(set(old) | set(new)):
                if f"{section}.{key}" not in RESUMABLE_DIFFERENCES and old.get(key) != new.get(key):
                    differing.append(key)
        return differing

    def save(self, folder: str) -> str:
        from ..core.files import write_text_atomically

        return write_text_atomically(os.path.join(folder, EXPERIMENT_FILE), json.dumps(self.to_dict(), indent=1))


def argument_parser(**kwargs) -> HfArgumentParser:
    """The command line of ``examples/finetune.py``: every field of the three dataclasses as a flag, plus
    ``--preset`` and ``--config`` (a YAML or JSON file of the same fields)."""
    parser = HfArgumentParser(ARGUMENT_CLASSES, **kwargs)
    parser.add_argument(
        "--preset", default=None, choices=sorted(PRESETS), help=f"a named preset (default: {DEFAULT_PRESET})"
    )
    parser.add_argument("--config", default=None, help="a YAML or JSON file of these fields (and `preset`)")
    return parser


def _given_values(parser: HfArgumentParser, argv: list[str]) -> dict:
    """The values the command line sets itself (not the defaults), parsed and typed by the parser."""
    actions = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in actions:
            action.default = argparse.SUPPRESS
        namespace, unknown = parser.parse_known_args(argv)
    finally:
        for action, default in actions:
            action.default = default
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return vars(namespace)


def read_config_file(path: str) -> dict:
    """A ``--config`` file: a YAML (or JSON) mapping of argument names to values."""
    import yaml

    with open(path, encoding="utf-8") as handle:
        values = yaml.safe_load(handle)
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config file is a mapping of argument names to values, got {type(values).__name__}")
    return values


def parse_command_line(argv: list[str], parser: HfArgumentParser | None = None) -> RunArguments:
    """The run that a command line asks for: the preset (``--preset``, or the config file's ``preset``, else the
    default), then the config file's values, then the flags, each checked by its dataclass. A bad value ends the
    program with the parser's usage and the message (exit status 2), before anything is loaded."""
    parser = parser or argument_parser()
    given = _given_values(parser, argv)
    preset, config_file = given.pop("preset", None), given.pop("config", None)
    try:
        file_values = read_config_file(config_file) if config_file else {}
        preset = preset or file_values.pop("preset", DEFAULT_PRESET)
        file_values.pop("preset", None)
        run = RunArguments.from_preset(preset, **{**file_values, **given})
    except (ValueError, OSError, StrictDataclassError) as error:  # StrictDataclassError: IAMConfig's checks
        parser.error(str(error))
    run.command = " ".join(shlex.quote(part) for part in ["python", "examples/finetune.py", *argv])
    return run


__all__ = [
    "EXPERIMENT_FILE",
    "RunArguments",
    "argument_parser",
    "parse_command_line",
    "preset_values",
    "read_config_file",
]
