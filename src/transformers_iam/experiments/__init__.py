"""The experiments behind ``examples/``: a run's arguments and presets, building it, running it, its report."""

from .arguments import DataArguments, ModelArguments, RecommendationTrainingArguments
from .build import SMOLLM2_GGUF, smollm2_directory
from .evaluate import evaluate_checkpoint
from .run import run_experiment
from .run_arguments import RunArguments

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
