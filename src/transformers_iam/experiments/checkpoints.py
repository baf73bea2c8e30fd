"""Where a run's files are written so that an interruption never leaves a half-written checkpoint, and how a run is
resumed from its last complete one (docs/reliability.md)."""

from __future__ import annotations

import json
import os
import shutil

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from .run_arguments import EXPERIMENT_FILE, RunArguments

logger = logging.get_logger(__name__)


def complete_checkpoints(trainer_dir: str) -> list[str]:
    """The Trainer's ``checkpoint-<step>`` folders that were written to the end, oldest first.

    The Trainer writes a checkpoint in place and ``trainer_state.json`` last, so a folder without it was cut off
    mid-save (its weights may be partial); the Trainer's own ``resume_from_checkpoint=True`` would pick it anyway.
    """
    if not os.path.isdir(trainer_dir):
        return []
    steps = []
    for name in os.listdir(trainer_dir):
        path = os.path.join(trainer_dir, name)
        prefix = f"{PREFIX_CHECKPOINT_DIR}-"
        if name.startswith(prefix) and name[len(prefix) :].isdigit() and os.path.isdir(path):
            if os.path.isfile(os.path.join(path, "trainer_state.json")):
                steps.append(int(name[len(prefix) :]))
            else:
                logger.warning(f"{path} was cut off mid-save (no trainer_state.json): removed, never resumed from")
                shutil.rmtree(path)
    return [os.path.join(trainer_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}") for step in sorted(steps)]


def _replace_directory(staging: str, final: str) -> None:
    """Move a fully written folder into place. A crash in between leaves no ``final`` at all (and a ``.old``), never a
    folder mixing two saves."""
    old = f"{final}.old"
    if os.path.exists(old):
        shutil.rmtree(old)
    if os.path.exists(final):
        os.rename(final, old)
    os.rename(staging, final)
    if os.path.exists(old):
        shutil.rmtree(old)


def _check_resumable(run: RunArguments, trainer_dir: str) -> str | None:
    """The checkpoint to resume from (``resume``), after checking it belongs to this very run; refuses to start a
    fresh run over an older run's checkpoints, which the Trainer would mix with the new ones."""
    checkpoints = complete_checkpoints(trainer_dir)
    if not run.training.resume:
        if checkpoints:
            raise FileExistsError(
                f"{trainer_dir} holds checkpoints of an earlier run ({os.path.basename(checkpoints[-1])}): pass "
                "--resume (resume=True) to continue it, or choose another --output-dir / remove that folder"
            )
        return None
    if not checkpoints:
        raise FileNotFoundError(f"resume: {trainer_dir} holds no complete checkpoint to resume from")
    saved_path = os.path.join(run.training.output_dir, EXPERIMENT_FILE)
    if os.path.isfile(saved_path):
        with open(saved_path, encoding="utf-8") as handle:
            saved = json.load(handle)
        differing = run.differences(saved)
        if differing:
            raise ValueError(
                f"resume: {saved_path} records another run: {', '.join(differing)} differ; resume with the same "
                "settings, or start a new run in another --output-dir"
            )
    return checkpoints[-1]
