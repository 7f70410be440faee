"""Row-wise Adagrad: one accumulator per embedding row, as PyTorch-BigGraph uses."""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-10


def row_adagrad_(table: Tensor, state: Tensor, index: Tensor, grad: Tensor, lr: float,
                 max_norm: float = 0.0) -> None:
    """Update ``table[index]`` in place from ``grad``, touching only those rows.

    ``table``: (n, dim) float32; ``state``: (n,) float32 sum of mean squared
    gradients per row (row-wise Adagrad), or (n, dim) sum of squared gradients
    per coordinate (plain Adagrad); ``index``: (k,) int64, may repeat (repeats
    are summed first); ``grad``: (k, dim). ``max_norm`` > 0 rescales updated
    rows longer than it.
    """
    if index.numel() == 0:
        return
    rows, inverse = torch.unique(index, return_inverse=True)
    summed = torch.zeros(rows.shape[0], grad.shape[1], dtype=grad.dtype)
    summed.index_add_(0, inverse, grad)
    squares = summed.pow(2) if state.dim() == 2 else summed.pow(2).mean(1)
    new_state = state[rows] + squares
    state[rows] = new_state
    step = new_state.sqrt_().add_(EPS).reciprocal_().mul_(-lr)
    table.index_add_(0, rows, summed.mul_(step if state.dim() == 2 else step.unsqueeze(1)))
    if max_norm > 0:
        _clip_rows_(table, rows, max_norm)


def dense_row_adagrad_(table: Tensor, state: Tensor, grad: Tensor, lr: float, max_norm: float = 0.0) -> None:
    """Adagrad on every row of ``table`` (``grad``: (n, dim), as from all-negatives scoring);
    ``state`` is (n,) for row-wise Adagrad or (n, dim) for plain Adagrad."""
    if state.dim() == 2:
        state.addcmul_(grad, grad)
        table.addcdiv_(grad, state.sqrt().add_(EPS), value=-lr)
    else:
        state.add_(grad.pow(2).mean(1))
        table.addcdiv_(grad, state.sqrt().add_(EPS).unsqueeze(1), value=-lr)
    if max_norm > 0:
        _clip_rows_(table, torch.arange(table.shape[0]), max_norm)


def _clip_rows_(table: Tensor, rows: Tensor, max_norm: float) -> None:
    norms = table[rows].norm(dim=1)
    over = norms > max_norm
    if bool(over.any()):
        long_rows = rows[over]
        table[long_rows] *= (max_norm / norms[over]).unsqueeze(1)


def dense_adagrad_(param: Tensor, state: Tensor, grad: Tensor, lr: float) -> None:
    """Element-wise Adagrad for small dense parameters (relation operators)."""
    state.add_(grad * grad)
    param.addcdiv_(grad, state.sqrt().add_(EPS), value=-lr)
