"""Three small C kernels, built on first use: the ranking loss's sparse gradients, row Adagrad
and the gather of a batch's rows.

After the first epoch only 2-5% of the ranking loss's hinges are active on the benchmark graph,
so the backward products of the fused step (two thirds of its flops) mostly multiply zeros.
Torch on the CPU has no fast way to act on so few entries (``nonzero`` alone cost as much as
the products), so ``native.c`` walks the hinges and updates only the rows of active ones. Its
row-wise Adagrad does in one pass what takes a dozen tensor operations (each a pass over the
batch's gradients); it and the gather prefetch the table rows they are about to touch.

It is compiled with the system's C compiler on first use, cached and loaded only when trusted
(:mod:`bigembed.cbuild`). Without a compiler, or with ``BIGEMBED_NATIVE=0``, training takes the
TorchScript kernels, which give the same results up to float rounding.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import torch
from torch import Tensor

from bigembed import cbuild

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("native.c")
ABI = 3
_SOURCE = cbuild.CSource(SOURCE, "native", ABI, log, "training uses the TorchScript kernels")

class _Resolve:
    """The default of the kernels' ``lib`` parameters: look the library up now (one-off
    callers and tests); the trainer resolves it once and passes it down instead."""

    def __repr__(self) -> str:
        return "RESOLVE"


RESOLVE = _Resolve()
Lib = ctypes.CDLL | None | _Resolve  # a library, None (the TorchScript kernels), or RESOLVE


def resolved(lib: Lib) -> ctypes.CDLL | None:
    return library() if isinstance(lib, _Resolve) else lib


_loaded: dict[str, ctypes.CDLL | None] = {}


def _compiler() -> str | None:
    return cbuild.compiler()


def _build_key(cc: str) -> str:
    return cbuild.build_key(_SOURCE, cc)


def _build(cc: str, out: Path) -> str:
    return cbuild.build(_SOURCE, cc, out)


def _declare(lib: ctypes.CDLL) -> None:
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    fn = lib.bigembed_wide_ranking
    fn.argtypes = [i64, i64, i64, i64, ptr, ptr, ptr, ctypes.c_float, ptr, ptr, ctypes.POINTER(i64)]
    fn.restype = ctypes.c_double
    ada = lib.bigembed_row_adagrad
    ada.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr, ctypes.c_float, ctypes.c_float]
    ada.restype = None
    lib.bigembed_gather.argtypes = [i64, i64, ptr, ptr, ptr]
    lib.bigembed_gather.restype = None


def library() -> ctypes.CDLL | None:
    """The compiled kernels, building them on first use; None where that is turned off or not
    possible (the reason is logged once)."""
    return cbuild.load(_SOURCE, _loaded, _declare)


def wide_ranking(lib: ctypes.CDLL, margin: float, W: Tensor, S1: Tensor, Sl: Tensor, weight: Tensor, chunk: int,
                 U: int) -> tuple[Tensor, Tensor, int]:
    """The ranking loss's ``(loss, dW, active hinges)`` for the wide layout, from its scores
    ``S1`` (chunks, c, c + U) and ``Sl`` (chunks, c, U) (see
    :func:`~bigembed.trainer.kernels.wide_score_gradients`, which it equals up to rounding)."""
    B, d = weight.shape[0], W.shape[1]
    n = B // chunk
    tensors = (W, S1, Sl, weight)
    if any(t.dtype != torch.float32 or not t.is_contiguous() for t in tensors):
        raise ValueError("the native kernel takes contiguous float32 tensors")
    if S1.shape != (n, chunk, chunk + U) or Sl.shape != (n, chunk, U) or W.shape[0] != n * (chunk + 2 * U) + B:
        raise ValueError(f"shapes do not match the wide layout: W {tuple(W.shape)}, S1 {tuple(S1.shape)}, "
                         f"Sl {tuple(Sl.shape)}, {B} edges in chunks of {chunk}, {U} sampled")
    dW = torch.empty_like(W)
    active = ctypes.c_int64(0)
    total = lib.bigembed_wide_ranking(n, chunk, U, d, S1.data_ptr(), Sl.data_ptr(), weight.data_ptr(),
                                      margin, W.data_ptr(), dW.data_ptr(), ctypes.byref(active))
    if active.value < 0:
        raise MemoryError("the native ranking kernel could not allocate its scratch")
    return torch.tensor(total, dtype=torch.float32), dW, active.value


def _check_ids(index: Tensor, n: int) -> None:
    if index.shape[0]:
        low, high = (int(v) for v in torch.aminmax(index))
        if low < 0 or high >= n:  # C would read or write outside the table
            raise IndexError(f"row ids must lie in [0, {n}): got {low}..{high}")


def gather(lib: ctypes.CDLL, out: Tensor, table: Tensor, index: Tensor) -> None:
    """``out[:] = table[index]``: all contiguous, ``out`` (k, dim) and ``table`` (n, dim) float32,
    ``index`` (k,) int64."""
    n, d = table.shape
    if (table.dtype != torch.float32 or out.dtype != torch.float32 or index.dtype != torch.int64
            or not all(t.is_contiguous() for t in (table, out, index))):
        raise ValueError("the native gather takes contiguous float32 rows and int64 ids")
    if out.shape != (index.shape[0], d):
        raise ValueError(f"shapes do not match: out {tuple(out.shape)}, table {tuple(table.shape)}, "
                         f"{index.shape[0]} ids")
    _check_ids(index, n)
    lib.bigembed_gather(index.shape[0], d, index.data_ptr(), table.data_ptr(), out.data_ptr())


def row_adagrad(lib: ctypes.CDLL, table: Tensor, state: Tensor, slot: Tensor, index: Tensor, grad: Tensor,
                lr: float, max_norm: float) -> None:
    """Row-wise Adagrad (``state``: (n,)) on ``table[index]`` from ``grad``, which it overwrites;
    as :func:`~bigembed.trainer.kernels.row_adagrad` up to float rounding. All contiguous:
    ``table`` (n, dim) and ``grad`` (k, dim) float32, ``index`` (k,) int64 in ``[0, n)``,
    ``slot`` int32 scratch of at least n."""
    n, d = table.shape
    k = index.shape[0]
    if (table.dtype != torch.float32 or state.dtype != torch.float32 or grad.dtype != torch.float32
            or index.dtype != torch.int64 or slot.dtype != torch.int32
            or not all(t.is_contiguous() for t in (table, state, slot, index, grad))):
        raise ValueError("the native Adagrad takes contiguous float32 rows, int64 ids and int32 slots")
    if state.shape != (n,) or grad.shape != (k, d) or slot.shape[0] < n:
        raise ValueError(f"shapes do not match: table {tuple(table.shape)}, state {tuple(state.shape)}, "
                         f"grad {tuple(grad.shape)}, {k} ids, {slot.shape[0]} slots")
    _check_ids(index, n)
    lib.bigembed_row_adagrad(k, d, index.data_ptr(), grad.data_ptr(), table.data_ptr(), state.data_ptr(),
                             slot.data_ptr(), lr, max_norm)
