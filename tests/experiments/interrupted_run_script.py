"""Runs the main job from an experiment.json and kills its own process (SIGKILL: no cleanup, like a lost machine) right
after the Trainer saved the checkpoint of step ``argv[2]``. Started by test_resume.py."""

from __future__ import annotations

import json
import os
import signal
import sys

from transformers import TrainerCallback

from transformers_iam.experiments import RunArguments, run_experiment


class KillAfterSave(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        config = RunArguments.from_dict(json.load(handle))
    run_experiment(config, callbacks=[KillAfterSave(int(sys.argv[2]))])
    sys.exit("the run was not killed")
