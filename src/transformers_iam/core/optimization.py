"""An AdamW whose sparse gradients update only the rows they hold (``IAMConfig.sparse_item_gradients``)."""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable

import torch


class LazyAdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` for dense gradients (its own code runs them), plus lazy updates for sparse ones: a
    parameter whose gradient is sparse (the item tables with ``config.sparse_item_gradients``) has its moments,
    weight decay and step applied to the rows the gradient holds only, as TensorFlow's LazyAdam and
    ``torch.optim.SparseAdam`` do; the other rows, and their moments, stay as they are. A row read at every step is
    updated exactly as AdamW updates it. The step's time then grows with the rows a batch reads, not the catalog.

    The sparse gradients are taken out of ``.grad`` as backward accumulates them (a post-accumulate-grad hook) and
    kept here until ``step``: the Trainer computes the gradients' norm with ``clip_grad_norm_``, which cannot read
    sparse tensors. ``max_grad_norm`` clips every gradient, sparse ones included, by their total norm, as the
    Trainer's ``max_grad_norm`` does: give the Trainer ``max_grad_norm=0`` and this optimizer the value
    (``last_grad_norm``: the norm before clipping). One process only: DDP would not all-reduce gradients kept here.

    Example:
        >>> table = torch.nn.Parameter(torch.ones(1000, 4))
        >>> optimizer = LazyAdamW([table], lr=0.1, weight_decay=0.01, max_grad_norm=1.0)
        >>> torch.nn.functional.embedding(torch.tensor([3]), table, sparse=True).sum().backward()
        >>> table.grad is None  # kept by the optimizer: the Trainer's norm sees dense gradients only
        True
        >>> optimizer.step()
        >>> bool((table[3] < 1).all()), bool((table[4] == 1).all())  # row 4 was not read: no decay, no step
        (True, True)
    """

    def __init__(self, params, *args, max_grad_norm: float | None = None, **kwargs):
        super().__init__(params, *args, **kwargs)
        for group in self.param_groups:
            for option in ("amsgrad", "maximize"):
                if group[option]:
                    raise ValueError(f"LazyAdamW does not support {option}=True")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm!r}")
        self.max_grad_norm = max_grad_norm
        self.last_grad_norm: torch.Tensor | None = None
        self._sparse_gradients: dict[torch.Tensor, torch.Tensor] = {}
        for group in self.param_groups:
            for parameter in group["params"]:
                if not parameter.requires_grad:  # frozen: no gradient to keep (and torch refuses the hook)
                    continue
                if not hasattr(parameter, "_lazy_adamw"):  # one hook per parameter: the newest optimizer is served
                    parameter.register_post_accumulate_grad_hook(_keep_sparse_gradient)
                parameter._lazy_adamw = weakref.ref(self)

    def _keep(self, parameter: torch.Tensor) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            if torch.distributed.get_world_size() > 1:
                raise RuntimeError(
                    "LazyAdamW keeps the sparse gradients of sparse_item_gradients outside .grad, where DDP would "
                    "not all-reduce them: train with sparse_item_gradients=False on more than one process"
                )
        kept = self._sparse_gradients.get(parameter)
        self._sparse_gradients[parameter] = parameter.grad if kept is None else kept + parameter.grad
        parameter.grad = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._sparse_gradients.clear()
        super().zero_grad(set_to_none)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        sparse = []
        for group in self.param_groups:
            for parameter in group["params"]:
                gradient = self._sparse_gradients.pop(parameter, None)
                if gradient is not None:  # a row read twice (or in two accumulated batches) counts once
                    sparse.append((group, parameter, gradient.coalesce()))
        if self.max_grad_norm is not None:
            self._clip_gradients([gradient for _, _, gradient in sparse])
        super().step()  # the dense gradients: the sparse ones are not in .grad, and AdamW skips those parameters
        for group, parameter, gradient in sparse:
            self._lazy_update(group, parameter, gradient)
        return loss

    def _clip_gradients(self, sparse_gradients: list[torch.Tensor]) -> None:
        dense = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        values = dense + [gradient.values() for gradient in sparse_gradients]
        if not values:
            return
        total = torch.stack([value.float().norm() for value in values]).norm()
        self.last_grad_norm = total
        scale = (self.max_grad_norm / (total + 1e-6)).clamp(max=1.0)
        for value in values:
            value.mul_(scale.to(value.dtype))

    def _lazy_update(self, group: dict, parameter: torch.Tensor, gradient: torch.Tensor) -> None:
        state = self.state[parameter]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
        state["step"] += 1
        step = float(state["step"])
        beta1, beta2 = group["betas"]
        lr, eps, weight_decay = float(group["lr"]), group["eps"], group["weight_decay"]
        rows, values = gradient.indices()[0], gradient.values().to(parameter.dtype)
        if weight_decay:
            parameter[rows] = parameter[rows] * (1 - lr * weight_decay)
        exp_avg = state["exp_avg"][rows].mul_(beta1).add_(values, alpha=1 - beta1)
        exp_avg_sq = state["exp_avg_sq"][rows].mul_(beta2).addcmul_(values, values, value=1 - beta2)
        state["exp_avg"][rows] = exp_avg
        state["exp_avg_sq"][rows] = exp_avg_sq
        denominator = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**step)).add_(eps)
        parameter.index_add_(0, rows, exp_avg / denominator, alpha=-lr / (1 - beta1**step))


def _keep_sparse_gradient(parameter: torch.Tensor) -> None:
    """After backward accumulates ``parameter``'s gradient: a sparse one goes to the parameter's ``LazyAdamW``."""
    optimizer = parameter._lazy_adamw()
    if optimizer is not None and parameter.grad is not None and parameter.grad.is_sparse:
        optimizer._keep(parameter)


__all__ = ["LazyAdamW"]
