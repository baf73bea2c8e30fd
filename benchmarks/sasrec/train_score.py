"""Train SASRec with RecBole on the exported split, then dump its full-catalog scores for valid and test.

    .venv-recbole/bin/python benchmarks/sasrec/train_score.py --out runs/sasrec   # in the RecBole venv

RecBole's own test metrics are logged too; benchmarks/sasrec/rank.py ranks the dumped scores
with our metric code so that every number in docs/results.md comes from one implementation.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole checkpoints on torch >= 2.6

import numpy as np
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import init_logger, init_seed

# recbole/model/sequential_recommender/sine.py turns on autograd anomaly detection for the whole process when the
# package is imported: every backward then stores stacks and checks for NaNs (measured on this CPU: 1.6 against 2.3
# training steps a second). It only checks, so switching it off changes no number.
torch.autograd.set_detect_anomaly(False)


class SASRecWithoutColdItems(SASRec):
    """SASRec whose training softmax leaves out the cold items (the cold-item protocol: cold items are not in the
    catalog while a model trains). Stock RecBole would use them as negatives at every step and push their scores
    down; left out, their embeddings stay at their initialisation and they are scored as an untrained ID model can."""

    def __init__(self, config, dataset, cold_ids: list[int]):
        super().__init__(config, dataset)
        cold = torch.zeros(self.n_items, dtype=torch.bool)
        cold[cold_ids] = True
        self.register_buffer("cold", cold)

    def calculate_loss(self, interaction):
        if self.loss_type != "CE":
            raise ValueError("the cold-item protocol is implemented for the CE loss only")
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        logits = torch.matmul(seq_output, self.item_embedding.weight.transpose(0, 1))
        return self.loss_fct(logits.masked_fill(self.cold, float("-inf")), interaction[self.POS_ITEM_ID])


def build_model(config, dataset, out: str):
    """SASRec, without the cold items in its training softmax when the export lists some (cold_items.json)."""
    path = os.path.join(out, "cold_items.json")
    if not os.path.isfile(path):
        return SASRec(config, dataset)
    with open(path, encoding="utf-8") as handle:
        tokens = json.load(handle)["tokens"]
    known = [token for token in tokens if token in dataset.field2token_id["item_id"]]
    print(f"cold items: {len(known)} of {len(tokens)} have a RecBole id; left out of the training softmax")
    return SASRecWithoutColdItems(config, dataset, [dataset.field2token_id["item_id"][token] for token in known])


def scores_for(model, loader, dataset, device):
    users, targets, rows = [], [], []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            interaction = batch[0].to(device)
            scores = model.full_sort_predict(interaction).view(interaction.length, -1)
            rows.append(scores.cpu().numpy())
            users += list(dataset.id2token("user_id", interaction["user_id"].cpu().numpy()))
            targets += list(dataset.id2token("item_id", interaction["item_id"].cpu().numpy()))
    return np.concatenate(rows), users, targets


def load_saved_weights(trainer, path: str) -> dict:
    """Put the weights of a checkpoint RecBole saved into the trainer's model; returns the checkpoint's record."""
    checkpoint = torch.load(path, weights_only=False)
    trainer.model.load_state_dict(checkpoint["state_dict"])
    return checkpoint


PROGRESS_FILE = "progress.pth"


def save_progress(trainer, path: str, valid_scores: list, train_seconds: float) -> None:
    """After every validated epoch: what a resumed run needs to go on as this one would (the epoch, the early-stopping
    counter, the best score and result, where the best weights are, model, optimizer and random states). Written to a
    temporary file and renamed, so a run cut short mid-write leaves the previous epoch's record whole."""
    state = {
        "epoch": valid_scores[-1][0],
        "cur_step": trainer.cur_step,
        "best_valid_score": trainer.best_valid_score,
        "best_valid_result": trainer.best_valid_result,
        "saved_model_file": trainer.saved_model_file,
        "state_dict": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "valid_curve": list(valid_scores),
        "train_seconds": train_seconds,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
    }
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def resume_progress(trainer, path: str) -> tuple[list, float]:
    """Put a run's last record (``save_progress``) back into a fresh trainer; returns the validation curve so far and
    the training seconds already spent. The best weights stay in the file the first run named."""
    state = torch.load(path, weights_only=False)
    trainer.model.load_state_dict(state["state_dict"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.start_epoch = state["epoch"] + 1
    trainer.cur_step = state["cur_step"]
    trainer.best_valid_score = state["best_valid_score"]
    trainer.best_valid_result = state["best_valid_result"]
    trainer.saved_model_file = state["saved_model_file"]
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    print(
        f"resuming after epoch {state['epoch']}: {len(state['valid_curve'])} epochs validated, "
        f"best validation NDCG@10 {state['best_valid_score']}"
    )
    return list(state["valid_curve"]), float(state["train_seconds"])


def train_to_convergence(trainer, config, train_data, valid_data, progress: str | None = None) -> tuple[dict, dict]:
    """RecBole stops after `stopping_step` validations without a better valid_metric (NDCG@10) and keeps the best
    epoch's weights in the trainer's model; `epochs` is only a cap. With ``progress`` (a file path) the state after
    every epoch is saved there, and a run that finds the file goes on from it (``--resume``)."""
    valid_scores: list[tuple[int, float]] = []
    spent = 0.0
    if progress and os.path.isfile(progress):
        valid_scores, spent = resume_progress(trainer, progress)
    started = time.time()

    def after_epoch(epoch: int, score: float) -> None:
        valid_scores.append((int(epoch), float(score)))
        if progress:
            save_progress(trainer, progress, valid_scores, spent + time.time() - started)

    finished = trainer.cur_step > config["stopping_step"] or trainer.start_epoch >= config["epochs"]
    if not finished:  # a resumed run that had already stopped goes straight to scoring
        trainer.fit(train_data, valid_data, show_progress=config["show_progress"], callback_fn=after_epoch)
    load_saved_weights(trainer, trainer.saved_model_file)
    best_epoch = max(valid_scores, key=lambda pair: pair[1])[0] if valid_scores else None  # first best: RecBole's
    training = {
        "epochs_cap": config["epochs"],
        "stopping_step": config["stopping_step"],
        "valid_metric": config["valid_metric"],
        "epochs_run": valid_scores[-1][0] + 1 if valid_scores else None,
        "best_epoch": best_epoch,  # 0-based, as RecBole logs it
        "stopped_early": bool(valid_scores) and valid_scores[-1][0] + 1 < config["epochs"],
        "converged": trainer.cur_step > config["stopping_step"],  # RecBole stops when the count passes it
        "train_seconds": round(spent + time.time() - started, 1),
        "valid_curve": valid_scores,
        "device": str(config["device"]),
    }
    return training, dict(trainer.best_valid_result)


def training_from_checkpoint(trainer, config, path: str) -> dict:
    """The best-so-far weights that RecBole saved before a run was cut short (a machine restart): its record names
    the epoch and says that training did not reach its stopping rule."""
    checkpoint = load_saved_weights(trainer, path)
    return {
        "epochs_cap": config["epochs"],
        "stopping_step": config["stopping_step"],
        "valid_metric": config["valid_metric"],
        "best_epoch": checkpoint["epoch"],
        "best_valid_ndcg@10": float(checkpoint["best_valid_score"]),
        "epochs_without_improvement_at_checkpoint": int(checkpoint["cur_step"]),
        "interrupted": f"scored from {os.path.basename(path)}, the best epoch saved before the run was cut short",
        "device": str(config["device"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="runs/sasrec")
    parser.add_argument(
        "--from-checkpoint",
        help="score a best-so-far checkpoint in <out>/saved instead of training (a run cut short: its record says so)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="go on from <out>/saved/progress.pth (written after every epoch) instead of starting again",
    )
    args = parser.parse_args()
    script_started = time.time()
    args.out = os.path.abspath(args.out)
    os.chdir(args.out)  # RecBole writes log/ and log_tensorboard/ into the working directory
    config = Config(model="SASRec", config_file_list=[os.path.join(args.out, "sasrec.yaml")])
    config["checkpoint_dir"] = os.path.join(args.out, "saved")
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    print(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = build_model(config, train_data.dataset, args.out).to(config["device"])
    trainer = Trainer(config, model)
    if args.from_checkpoint:
        training = training_from_checkpoint(
            trainer, config, os.path.abspath(os.path.join(args.out, args.from_checkpoint))
        )
        best_result = {"ndcg@10": training["best_valid_ndcg@10"]}
    else:
        progress = os.path.join(config["checkpoint_dir"], PROGRESS_FILE)
        if os.path.isfile(progress) and not args.resume:
            raise SystemExit(f"{progress} holds an earlier run: pass --resume to go on from it, or remove it")
        os.makedirs(config["checkpoint_dir"], exist_ok=True)
        training, best_result = train_to_convergence(trainer, config, train_data, valid_data, progress)
    recbole_test = trainer.evaluate(test_data, load_best_model=False, show_progress=config["show_progress"])
    print("RecBole's own test metrics:", dict(recbole_test))
    item_tokens = list(dataset.field2id_token["item_id"])  # index = RecBole internal id; 0 is [PAD]
    print("training:", {key: value for key, value in training.items() if key != "valid_curve"})
    result = {
        "item_tokens": item_tokens,
        "recbole_valid": dict(best_result),
        "recbole_test": dict(recbole_test),
        "training": training,
    }
    for split, loader in (("valid", valid_data), ("test", test_data)):
        scores, users, targets = scores_for(trainer.model, loader, dataset, config["device"])
        np.save(os.path.join(args.out, f"scores_{split}.npy"), scores.astype(np.float32))
        result[f"{split}_users"], result[f"{split}_targets"] = users, targets
    training["wall_seconds"] = round(time.time() - script_started, 1)  # data loading, training, scoring
    with open(os.path.join(args.out, "sasrec_scores.json"), "w") as handle:
        json.dump(result, handle, default=float)
    print("scores written to", args.out)


if __name__ == "__main__":
    main()
