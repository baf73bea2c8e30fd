"""How far the sampled loss's gradient is from the full cross-entropy's, on a trained checkpoint's own states: a way
to choose ``IAMConfig.num_sampled_negatives`` for a catalog without training a model per setting.

    python benchmarks/sampled_loss_fidelity.py runs/ml1m-full/checkpoint --negatives 256 960 --in-batch 256 1024

Reads training batches of the checkpoint's run (its split, collator and batch size, shuffled with a fixed seed),
takes the trained model's states at every item's end (every-item supervision) and, for each number of negatives,
``--draws`` draws of the sampled loss's gradient with respect to those states and to the adapter's item rows, set
against the full cross-entropy's gradient on the same states. Prints, relative to the full gradient's squared norm,
the mean squared error of one draw (what a training step sees) and the squared bias (the part that more steps do
not average away: the draws' mean against the full gradient, less the variance the mean still carries). The
sampling frequencies are the run's training counts, as ``examples/finetune.py`` gives them.

``--in-batch N``: the estimator this library used before its fourteenth session, for comparison: the batch's
targets as negatives with N uniform draws, each candidate corrected by its expected count among them.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader

from transformers_iam.core.losses import (
    catalog_cross_entropy,
    sampled_softmax_cross_entropy,
    sampling_log_frequency,
    targeted_states,
)
from transformers_iam.core.readout import item_end_positions
from transformers_iam.experiments.evaluate import load_checkpoint_run
from transformers_iam.recsys.baselines import popularity_scores


class ErrorTally:
    """Sums over batches of a gradient's squared error, its draws' mean's squared error, its variance, and the full
    gradient's squared norm."""

    def __init__(self) -> None:
        self.mse = self.mean_error = self.variance = self.norm = 0.0

    def add(self, draws: list[torch.Tensor], full: torch.Tensor) -> None:
        stacked = torch.stack(draws)
        mean = stacked.mean(0)
        self.mse += float((stacked - full).pow(2).sum()) / len(draws)
        self.mean_error += float((mean - full).pow(2).sum())
        self.variance += float((stacked - mean).pow(2).sum()) / (len(draws) - 1)
        self.norm += float(full.pow(2).sum())

    def relative(self, draws: int) -> tuple[float, float]:
        """Mean squared error of one draw and squared bias, over the full gradient's squared norm."""
        return self.mse / self.norm, max(0.0, self.mean_error - self.variance / draws) / self.norm


def gradients(loss, adapter: torch.nn.Module, states: torch.Tensor, *args) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient of ``loss(adapter, states, *args)`` with respect to the states and to the adapter's item rows."""
    states = states.detach().requires_grad_()
    adapter.zero_grad(set_to_none=True)
    loss(adapter, states, *args).backward()
    rows = adapter.item_embeddings.weight.grad
    return states.grad, rows.to_dense() if rows.is_sparse else rows  # sparse with sparse_item_gradients


def full_cross_entropy(adapter, states, labels) -> torch.Tensor:
    return catalog_cross_entropy(adapter, adapter(states), None, labels, None, adapter.item_embeddings.weight.shape[0])


def in_batch_uniform_loss(adapter, states, labels, num_negatives, log_frequency, generator) -> torch.Tensor:
    """The earlier sampled loss: candidates are the batch's targets and ``num_negatives`` uniform draws, each lowered
    by the log of its expected count among them (the row's own target not), a row's target elsewhere masked."""
    num_items = log_frequency.shape[0]
    candidates = torch.cat([labels, torch.randint(num_items, (num_negatives,), generator=generator)])
    weight, bias = adapter.item_rows(candidates)
    scores = adapter.project(states) @ weight.T + bias
    log_count = (labels.numel() * torch.softmax(log_frequency, 0)[candidates] + num_negatives / num_items).log()
    scores = scores - log_count
    rows = torch.arange(labels.numel())
    scores[rows, rows] += log_count[: labels.numel()]
    own_target = candidates[None, :] == labels[:, None]
    own_target[rows, rows] = False
    return torch.nn.functional.cross_entropy(scores.masked_fill(own_target, float("-inf")), rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a run's checkpoint folder (<run>/checkpoint)")
    parser.add_argument("--negatives", type=int, nargs="+", default=[256, 960])
    parser.add_argument("--in-batch", type=int, nargs="*", default=[], help="the earlier estimator's uniform draws")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--draws", type=int, default=16)
    args = parser.parse_args()

    run, data, model, collator = load_checkpoint_run(args.checkpoint)
    if model.config.supervision != "every_item":
        raise ValueError("this benchmark reads every item's end: the checkpoint must use supervision='every_item'")
    model.eval()
    adapter = model.adapter.requires_grad_(True)
    num_items = model.config.num_items
    log_frequency = sampling_log_frequency(popularity_scores(data.visible_sequences("train"), model.catalog))
    loader = DataLoader(
        data.train,
        batch_size=run.training.per_device_train_batch_size,
        shuffle=True,
        collate_fn=collator,
        generator=torch.Generator().manual_seed(0),
    )
    settings = [(sampled_softmax_cross_entropy, n) for n in args.negatives]
    settings += [(in_batch_uniform_loss, n) for n in args.in_batch]
    tallies = {setting: (ErrorTally(), ErrorTally()) for setting in settings}
    columns = {setting: 0 for setting in settings}
    targets_seen = 0
    for batch_index, batch in enumerate(loader):
        if batch_index == args.batches:
            break
        labels = batch.pop("labels")
        batch.pop("history_item_indices", None)  # for ranking; training does not read it
        with torch.no_grad():
            backbone = model.backbone_forward(**batch)
        hidden = backbone.last_hidden_state
        ends = item_end_positions(backbone.item_segment_ids, backbone.attention_mask)
        states, targets = targeted_states(hidden, hidden, labels, ends, num_items)
        targets_seen += targets.numel()
        full = gradients(full_cross_entropy, adapter, states, targets)
        for (loss, negatives), (state_tally, row_tally) in tallies.items():
            generator = torch.Generator().manual_seed(batch_index)
            draws = [
                gradients(loss, adapter, states, targets, negatives, log_frequency, generator)
                for _ in range(args.draws)
            ]
            state_tally.add([draw[0] for draw in draws], full[0])
            row_tally.add([draw[1] for draw in draws], full[1])
            in_batch = targets.numel() if loss is in_batch_uniform_loss else 1
            columns[loss, negatives] += (min(negatives + in_batch, num_items)) * targets.numel()
    print(
        f"{args.checkpoint}: {args.batches} training batches ({targets_seen:,} targets), {num_items:,} items, "
        f"{args.draws} draws per batch; gradient with respect to the states and the item rows"
    )
    print(
        "| loss | score columns / catalog | states: relative MSE of one draw | states: relative squared bias "
        "| item rows: relative MSE | item rows: relative squared bias |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for (loss, negatives), tallies_of_setting in tallies.items():
        kind = "uniform + the batch's targets (earlier)" if loss is in_batch_uniform_loss else "drawn by frequency"
        share = columns[loss, negatives] / targets_seen / num_items
        cells = " | ".join(f"{value:.4f}" for tally in tallies_of_setting for value in tally.relative(args.draws))
        print(f"| {negatives:,} {kind} | {share:.1%} | {cells} |")


if __name__ == "__main__":
    main()
