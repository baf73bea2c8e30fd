"""Row-sparse gradients for the per-item tables (``IAMConfig.sparse_item_gradients``).

A training step with the sampled loss reads a few hundred items' adapter rows and id vectors; their gradients are
dense by default (a zero row for every other item), so the step's backward and the optimizer's update grow with the
catalog. With sparse gradients they hold the rows the step read, and [`LazyAdamW`] updates only those.
"""

from __future__ import annotations

import torch


class _RowGather(torch.autograd.Function):
    """``table[indices]`` whose gradient to ``table`` is a sparse COO tensor of the rows read (1-D or 2-D tables:
    ``nn.functional.embedding(sparse=True)`` takes 2-D tables only, and the adapter's bias is 1-D)."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(indices)
        ctx.table_shape = table.shape
        return table[indices]

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (indices,) = ctx.saved_tensors
        flat = indices.reshape(-1)
        values = grad_output.reshape(flat.numel(), *ctx.table_shape[1:])
        return torch.sparse_coo_tensor(flat[None], values, ctx.table_shape, check_invariants=False), None


def gather_rows(table: torch.Tensor, indices: torch.Tensor, sparse_gradient: bool) -> torch.Tensor:
    """``table[indices]``; with ``sparse_gradient`` (and a gradient to compute) its gradient to ``table`` is sparse.

    Example:
        >>> table = torch.nn.Parameter(torch.ones(1000, 4))
        >>> gather_rows(table, torch.tensor([3, 3, 7]), sparse_gradient=True).sum().backward()
        >>> table.grad.is_sparse, table.grad.coalesce().indices().tolist()
        (True, [[3, 7]])
    """
    if sparse_gradient and table.requires_grad and torch.is_grad_enabled():
        return _RowGather.apply(table, indices)
    return table[indices]


__all__ = ["gather_rows"]
