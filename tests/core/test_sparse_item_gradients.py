"""Sparse gradients for the item tables (``IAMConfig.sparse_item_gradients``) and ``LazyAdamW``: the rows a step
reads get the gradients and the update the dense path gives them, the others are left as they were, and a model
trained this way learns the task."""

from __future__ import annotations

import pytest
import torch
from transformers import Trainer

from transformers_iam import IAMDataCollator, IAMForCausalRecommendation, LazyAdamW
from transformers_iam.core.sparse_rows import gather_rows
from transformers_iam.experiments.arguments import RecommendationTrainingArguments
from transformers_iam.experiments.build import make_optimizer

from ..testing_utils import collator_kwargs, next_item_dataset, same_weights_with, tiny_model
from .test_training import mean_loss, quiet_training_arguments

SAMPLED = dict(num_sampled_negatives=8, use_item_id_embeddings=True, item_id_embedding_size=4)
ITEM_TABLES = ("adapter.item_embeddings.weight", "adapter.item_embeddings.bias", "item_id_embeddings.weight")


def training_gradients(model: IAMForCausalRecommendation, batch: dict) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the same sampled negatives for both models
    model(**batch).loss.backward()
    return {name: parameter.grad for name, parameter in model.named_parameters() if parameter.grad is not None}


def test_the_sparse_gradients_are_the_dense_ones_of_the_rows_a_step_read(tokenizer, catalog):
    dense = tiny_model(num_items=len(catalog), **SAMPLED)
    with torch.no_grad():  # non-zero id vectors, so their rows' gradient reaches the rows below
        dense.item_id_embeddings.weight.normal_()
    sparse = same_weights_with(dense, sparse_item_gradients=True)
    collator = IAMDataCollator(tokenizer, catalog, max_length=64, **collator_kwargs())
    batch = collator(list(next_item_dataset(catalog, 4, seed=0)))
    expected, got = training_gradients(dense, batch), training_gradients(sparse, batch)
    assert expected.keys() == got.keys()
    for name, gradient in got.items():
        assert gradient.is_sparse == (name in ITEM_TABLES), name
        torch.testing.assert_close(gradient.to_dense(), expected[name], msg=name)
    rows_read = got["adapter.item_embeddings.weight"].coalesce().indices().shape[1]
    assert rows_read <= 4 + 8  # the batch's targets and the sampled negatives, not the catalog


def adamw_pair(weight_decay: float, max_grad_norm: float | None):
    torch.manual_seed(0)
    table, bias = torch.randn(30, 6), torch.randn(30)
    parameters = [torch.nn.Parameter(t.clone()) for t in (table, bias, table, bias)]
    groups = [{"params": [parameters[0]], "weight_decay": weight_decay}, {"params": [parameters[1]], "weight_decay": 0}]
    lazy_groups = [{"params": [parameters[2]], "weight_decay": weight_decay}, {"params": [parameters[3]]}]
    reference = torch.optim.AdamW(groups, lr=0.05)
    lazy = LazyAdamW(lazy_groups, lr=0.05, weight_decay=0.0, max_grad_norm=max_grad_norm)
    return parameters, reference, lazy


def squared_loss(table, bias, rows, targets, sparse: bool) -> torch.Tensor:
    table_rows, bias_rows = gather_rows(table, rows, sparse), gather_rows(bias, rows, sparse)
    return ((table_rows - targets) ** 2).sum() + (bias_rows**2).sum()


@pytest.mark.parametrize("weight_decay,max_grad_norm", [(0.0, None), (0.1, None), (0.1, 0.5)])
def test_lazy_adamw_updates_rows_read_at_every_step_as_adamw_does(weight_decay, max_grad_norm):
    (table, bias, lazy_table, lazy_bias), reference, lazy = adamw_pair(weight_decay, max_grad_norm)
    for _ in range(6):
        rows = torch.cat([torch.randperm(30), torch.randint(30, (12,))])  # every row, some twice
        targets = torch.randn(rows.numel(), 6)
        squared_loss(table, bias, rows, targets, sparse=False).backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_([table, bias], max_grad_norm)
        reference.step()
        squared_loss(lazy_table, lazy_bias, rows, targets, sparse=True).backward()
        assert lazy_table.grad is None and lazy_bias.grad is None  # kept by the optimizer, out of the Trainer's norm
        lazy.step()
        for optimizer in (reference, lazy):
            optimizer.zero_grad(set_to_none=True)
    torch.testing.assert_close(lazy_table, table)
    torch.testing.assert_close(lazy_bias, bias)


def test_lazy_adamw_leaves_the_rows_not_read_and_their_moments_as_they_were():
    lazy_table, lazy_bias = adamw_pair(0.1, 1.0)[0][2:]
    frozen = torch.nn.Parameter(torch.ones(3), requires_grad=False)  # given as model.parameters() gives it
    lazy = LazyAdamW([lazy_table, lazy_bias, frozen], lr=0.05, weight_decay=0.1, max_grad_norm=1.0)
    squared_loss(lazy_table, lazy_bias, torch.arange(30), torch.randn(30, 6), sparse=True).backward()
    lazy.step()  # every row read once: every row has moments
    lazy.zero_grad(set_to_none=True)
    before = lazy_table.detach().clone()
    moments = {key: lazy.state[lazy_table][key].clone() for key in ("exp_avg", "exp_avg_sq")}
    rows = torch.tensor([2, 7, 7])
    squared_loss(lazy_table, lazy_bias, rows, torch.randn(3, 6), sparse=True).backward()
    lazy.step()
    changed = (lazy_table.detach() != before).any(1).nonzero().view(-1).tolist()
    assert changed == [2, 7]  # no decay, no step from old moments on the 28 rows not read
    for key, value in moments.items():
        moved = (lazy.state[lazy_table][key] != value).any(1).nonzero().view(-1).tolist()
        assert moved == [2, 7], key


def test_a_model_trained_with_sparse_item_gradients_learns_the_task(tmp_path, tokenizer, catalog):
    model = tiny_model(num_layers=2, num_items=len(catalog), num_sampled_negatives=16, sparse_item_gradients=True)
    model.set_catalog(catalog)
    collator = IAMDataCollator(tokenizer, catalog, max_length=64, **collator_kwargs())
    train, held_out = next_item_dataset(catalog, 256, seed=0), next_item_dataset(catalog, 64, seed=1)
    before = mean_loss(model, collator, held_out)
    # the optimizer clips (the Trainer cannot); at the tests' usual 1e-2 this toy's held-out loss swings by seed
    # (0.73 to 1.83 over four seeds with dense AdamW), at 3e-3 sparse and dense land together (over seeds 0-3, 0.55 /
    # 0.41, 1.07 / 0.84, 0.93 / 1.02, 0.79 / 0.77)
    args = quiet_training_arguments(tmp_path, max_grad_norm=0.0, learning_rate=3e-3)
    optimizer = LazyAdamW(model.parameters(), lr=args.learning_rate, max_grad_norm=1.0)
    Trainer(model=model, args=args, train_dataset=train, data_collator=collator, optimizers=(optimizer, None)).train()
    after = mean_loss(model, collator, held_out)
    print(f"held-out full cross-entropy {before:.3f} -> {after:.3f}")
    assert after < 0.6 * before, (before, after)
    assert optimizer.last_grad_norm is not None


def test_the_run_trains_sparse_item_tables_with_lazy_adamw(tmp_path):
    model = tiny_model(num_items=20, sparse_item_gradients=True, **SAMPLED)
    args = RecommendationTrainingArguments(output_dir=str(tmp_path), max_grad_norm=0.7)
    optimizer = make_optimizer(model, args)
    assert isinstance(optimizer, LazyAdamW) and optimizer.max_grad_norm == 0.7
    with pytest.raises(ValueError, match="optim='sgd' with sparse_item_gradients"):
        make_optimizer(model, RecommendationTrainingArguments(output_dir=str(tmp_path), optim="sgd"))
    assert type(make_optimizer(tiny_model(num_items=20), args)) is torch.optim.AdamW


def test_lazy_adamw_refuses_sparse_gradients_on_more_than_one_process(monkeypatch):
    # DDP reduces .grad; the sparse gradients kept outside it would train each process's rows apart
    table = torch.nn.Parameter(torch.ones(10, 2))
    optimizer = LazyAdamW([table], lr=0.1)  # noqa: F841 (alive: the hook serves the newest live optimizer)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 2)
    with pytest.raises(RuntimeError, match="train with sparse_item_gradients=False on more than one process"):
        gather_rows(table, torch.tensor([1]), sparse_gradient=True).sum().backward()
