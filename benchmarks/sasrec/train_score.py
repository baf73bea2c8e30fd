"""Train SASRec with RecBole on the exported split, then dump its full-catalog scores for valid and test.

    .venv-recbole/bin/python benchmarks/sasrec/train_score.py --out runs/sasrec   # in the RecBole venv

RecBole's own test metrics are logged too; benchmarks/sasrec/rank.py ranks the dumped scores
with our metric code so that every number in docs/results.md comes from one implementation.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole checkpoints on torch >= 2.6

import numpy as np
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import init_logger, init_seed


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="runs/sasrec")
    args = parser.parse_args()
    args.out = os.path.abspath(args.out)
    os.chdir(args.out)  # RecBole writes log/ and log_tensorboard/ into the working directory
    config = Config(model="SASRec", config_file_list=[os.path.join(args.out, "sasrec.yaml")])
    config["checkpoint_dir"] = os.path.join(args.out, "saved")
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    print(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = SASRec(config, train_data.dataset).to(config["device"])
    trainer = Trainer(config, model)
    best_valid, best_result = trainer.fit(train_data, valid_data, show_progress=config["show_progress"])
    recbole_test = trainer.evaluate(test_data, load_best_model=True, show_progress=config["show_progress"])
    print("RecBole's own test metrics:", dict(recbole_test))
    item_tokens = list(dataset.field2id_token["item_id"])  # index = RecBole internal id; 0 is [PAD]
    result = {"item_tokens": item_tokens, "recbole_valid": dict(best_result), "recbole_test": dict(recbole_test)}
    for split, loader in (("valid", valid_data), ("test", test_data)):
        scores, users, targets = scores_for(trainer.model, loader, dataset, config["device"])
        np.save(os.path.join(args.out, f"scores_{split}.npy"), scores.astype(np.float32))
        result[f"{split}_users"], result[f"{split}_targets"] = users, targets
    with open(os.path.join(args.out, "sasrec_scores.json"), "w") as handle:
        json.dump(result, handle, default=float)
    print("scores written to", args.out)


if __name__ == "__main__":
    main()
