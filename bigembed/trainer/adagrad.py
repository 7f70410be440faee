"""Adagrad: the row-wise and per-coordinate updates of the embeddings (a batch's rows gathered by
partition in :class:`SideGrads`), and the element-wise one of the relation parameters."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from bigembed.trainer import native
from bigembed.trainer.kernels import fused_clip_rows_, fused_row_adagrad
from bigembed.trainer.state import PartitionState

EPS = 1e-10  # Adagrad's epsilon, for every kernel (the TorchScript and C ones take it as an argument)

_scratch = threading.local()


def row_slots(rows: int, device: torch.device | None = None) -> Tensor:
    """This thread's scratch for :func:`~bigembed.trainer.kernels.row_adagrad`: at least ``rows``
    int32 entries on ``device`` (default: the CPU), kept between calls (4 bytes a row of the
    largest partition, per worker: :data:`~bigembed.scheduler.memory.SLOT_BYTES`)."""
    device = torch.device("cpu") if device is None else device
    slots = getattr(_scratch, "slots", None)
    if slots is None:
        slots = _scratch.slots = {}
    slot = slots.get(device)
    if slot is None or slot.shape[0] < rows:
        slot = slots[device] = torch.empty(rows, dtype=torch.int32, device=device)
    return slot


def merge_adjacent(pieces: Sequence[Tensor]) -> list[Tensor]:
    """``pieces`` with each run of neighbours in memory (one ending where the next begins, as
    views of one gradient buffer) joined into one view, so they need no copy to concatenate."""
    out: list[Tensor] = []
    for t in pieces:
        if out:
            last = out[-1]
            if (last.is_contiguous() and t.is_contiguous() and last.dtype == t.dtype
                    and last.untyped_storage().data_ptr() == t.untyped_storage().data_ptr()
                    and last.storage_offset() + last.numel() == t.storage_offset()):
                out[-1] = last.as_strided((last.shape[0] + t.shape[0], *last.shape[1:]), last.stride())
                continue
        out.append(t)
    return out


def row_adagrad_(table: Tensor, state: Tensor, index: Tensor | Sequence[Tensor], grad: Tensor | Sequence[Tensor],
                 lr: float, max_norm: float = 0.0, consume: bool = False, lib: native.Lib = native.RESOLVE) -> None:
    """Update ``table[index]`` in place from ``grad``, touching only those rows.

    ``table``: (n, dim) float32; ``state``: (n,) float32 sum of mean squared
    gradients per row (row-wise Adagrad), or (n, dim) sum of squared gradients
    per coordinate (plain Adagrad); ``index``: (k,) int64, may repeat (repeats
    are summed first); ``grad``: (k, dim); or both as lists of pieces, read as
    their concatenation (saves copying the gradients into one tensor).
    ``max_norm`` > 0 rescales updated rows longer than it. ``consume``: the gradients
    are not needed after this call, so they may be overwritten (saves a copy). ``lib``: the C
    kernels, None for the TorchScript ones, or RESOLVE to look them up (:mod:`bigembed.trainer.native`).
    """
    indices = [index] if isinstance(index, Tensor) else list(index)
    grads = [grad] if isinstance(grad, Tensor) else merge_adjacent(grad)
    if not indices:
        return
    slots = row_slots(table.shape[0], table.device)
    lib = native.resolved(lib) if table.is_cpu else None
    if (lib is not None and table.dtype == state.dtype == torch.float32 and state.dim() == 1
            and table.is_contiguous() and state.is_contiguous() and all(g.dtype == torch.float32 for g in grads)):
        flat = indices[0] if len(indices) == 1 else torch.cat(indices)
        if len(grads) > 1:
            g = torch.cat(grads)
        elif consume and grads[0].is_contiguous():  # not an expanded view, whose rows share memory
            g = grads[0]
        else:
            g = grads[0].clone(memory_format=torch.contiguous_format)
        native.row_adagrad(lib, table, state, slots, flat.long().contiguous(), g.reshape(flat.shape[0], -1), lr,
                           max_norm, EPS)
        return
    fused_row_adagrad(table, state, slots, indices, grads, lr, max_norm, consume, EPS)


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
        fused_clip_rows_(table, torch.arange(table.shape[0], device=table.device), max_norm)


def dense_adagrad_(param: Tensor, state: Tensor, grad: Tensor, lr: float) -> None:
    """Element-wise Adagrad for small dense parameters (relation operators).

    Hogwild workers update these parameters at the same time, so an add to ``state`` may be
    lost; the step is therefore taken from this worker's own sum (what it read plus its own
    squares), never from a re-read that another worker's older write may have replaced: a
    coordinate moves by at most ``lr`` a step, whatever the race. (Re-reading let a large
    gradient be divided by another worker's tiny sum, and a run blew up.)"""
    square = grad * grad
    own = state + square
    state.add_(square)
    param.addcdiv_(grad, own.sqrt_().add_(EPS), value=-lr)


@dataclass
class SideGrads:
    """Gradient pieces for one partition: rows with their gradients, and maybe dense ones,
    each covering the rows ``[start, start + len)`` of one entity type (``dense[start]``)."""

    rows: list[Tensor] = field(default_factory=list)
    grads: list[Tensor] = field(default_factory=list)
    dense: dict[int, Tensor] = field(default_factory=dict)

    def add_rows(self, rows: Tensor, grad: Tensor) -> None:
        self.rows.append(rows.reshape(-1))
        self.grads.append(grad.reshape(-1, grad.shape[-1]))

    def add_dense(self, grad: Tensor, start: int = 0) -> None:
        old = self.dense.get(start)
        self.dense[start] = grad if old is None else old + grad

    def apply(self, state: PartitionState, lr: float, max_norm: float, lib: native.Lib = native.RESOLVE) -> None:
        """One Adagrad step: a dense piece's rows (and the sparse rows inside it) are updated
        together; sparse rows outside every dense piece are updated row by row. ``lib``: the C
        kernels or None (:data:`~bigembed.trainer.native.Lib`)."""
        n = state.emb.shape[0]
        if not self.dense:  # the common case: sparse rows only, passed as pieces (no copy)
            if self.rows:
                row_adagrad_(state.emb, state.adagrad, self.rows, self.grads, lr, max_norm, consume=True, lib=lib)
            return
        rows = torch.cat(self.rows) if self.rows else None
        grads = torch.cat(self.grads) if self.grads else None
        for start, dense in self.dense.items():
            stop = start + dense.shape[0]
            if rows is not None and grads is not None:
                inside = None if (start, stop) == (0, n) else (rows >= start) & (rows < stop)
                if inside is None:
                    dense = dense.index_add(0, rows, grads)
                    rows = grads = None
                else:
                    dense = dense.index_add(0, rows[inside] - start, grads[inside])
                    rows, grads = rows[~inside], grads[~inside]
            dense_row_adagrad_(state.emb[start:stop], state.adagrad[start:stop], dense, lr, max_norm)
        if rows is not None and grads is not None and rows.numel():
            row_adagrad_(state.emb, state.adagrad, rows, grads, lr, max_norm, consume=True, lib=lib)
