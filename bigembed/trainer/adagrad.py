"""Row-wise Adagrad: one accumulator per embedding row, as PyTorch-BigGraph uses."""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-10


def row_adagrad_(table: Tensor, state: Tensor, index: Tensor, grad: Tensor, lr: float) -> None:
    """Update ``table[index]`` in place from ``grad``, touching only those rows.

    ``table``: (n, dim) float32; ``state``: (n,) float32 sum of mean squared
    gradients per row; ``index``: (k,) int64, may repeat (repeats are summed
    first); ``grad``: (k, dim).
    """
    if index.numel() == 0:
        return
    rows, inverse = torch.unique(index, return_inverse=True)
    summed = torch.zeros(rows.shape[0], grad.shape[1], dtype=grad.dtype)
    summed.index_add_(0, inverse, grad)
    new_state = state[rows] + summed.pow(2).mean(1)
    state[rows] = new_state
    step = new_state.sqrt_().add_(EPS).reciprocal_().mul_(-lr)
    table.index_add_(0, rows, summed.mul_(step.unsqueeze(1)))


def dense_adagrad_(param: Tensor, state: Tensor, grad: Tensor, lr: float) -> None:
    """Element-wise Adagrad for small dense parameters (relation operators)."""
    state.add_(grad * grad)
    param.addcdiv_(grad, state.sqrt().add_(EPS), value=-lr)
