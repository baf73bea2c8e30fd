"""The experiments: presets, building a run, running it, and its report (behind ``examples/``)."""

from .build import SMOLLM2_GGUF, smollm2_directory
from .config import ExperimentConfig
from .evaluate import evaluate_checkpoint
from .run import run_experiment

__all__ = ["SMOLLM2_GGUF", "ExperimentConfig", "evaluate_checkpoint", "run_experiment", "smollm2_directory"]
