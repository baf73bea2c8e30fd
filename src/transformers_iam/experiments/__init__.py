"""The experiments behind ``examples/``: a run's arguments and presets, building it, running it, its report."""

from .arguments import DataArguments, ModelArguments, RecommendationTrainingArguments, RunArguments
from .build import SMOLLM2_GGUF, smollm2_directory
from .evaluate import evaluate_checkpoint
from .run import run_experiment

__all__ = [
    "SMOLLM2_GGUF",
    "DataArguments",
    "ModelArguments",
    "RecommendationTrainingArguments",
    "RunArguments",
    "evaluate_checkpoint",
    "run_experiment",
    "smollm2_directory",
]
