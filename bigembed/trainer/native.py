"""Three small C kernels, built on first use: the ranking loss's sparse gradients, row Adagrad
and the gather of a batch's rows.

After the first epoch only 2-5% of the ranking loss's hinges are active on the benchmark graph,
so the backward products of the fused step (two thirds of its flops) mostly multiply zeros.
Torch on the CPU has no fast way to act on so few entries (``nonzero`` alone cost as much as
the products), so ``native.c`` walks the hinges and updates only the rows of active ones. Its
row-wise Adagrad does in one pass what takes a dozen tensor operations (each a pass over the
batch's gradients); it and the gather prefetch the table rows they are about to touch.

It is compiled with the system's C compiler on first use, cached and loaded only when trusted
(:mod:`bigembed.cbuild`). Which kernels a training run uses is decided once, when it starts
(:func:`choose`, from ``training.kernels``): without a compiler, or with ``BIGEMBED_NATIVE=0``,
``auto`` takes the TorchScript kernels, which give the same results up to float rounding.
Loading a Python extension through ``torch.utils.cpp_extension`` was considered: it needs a C++
compiler, the Python and torch headers and ninja, and builds for tens of seconds, where this
plain C file needs only ``cc`` and 0.2 s; the kernels take raw pointers, so nothing is gained.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from bigembed import cbuild
from bigembed.errors import ConfigError

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("native.c")
ABI = 4
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


_loaded: cbuild.Loaded = {}


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
    ada.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr, ctypes.c_float, ctypes.c_float, ctypes.c_float]
    ada.restype = None
    lib.bigembed_gather.argtypes = [i64, i64, ptr, ptr, ptr]
    lib.bigembed_gather.restype = None


def library() -> ctypes.CDLL | None:
    """The compiled kernels, building them on first use; None where that is turned off or not
    possible (the reason is logged once)."""
    return cbuild.load(_SOURCE, _loaded, _declare)


TORCHSCRIPT_COST = "about 1.7x slower with the ranking loss"  # README, benchmarks/RESULTS.md


@dataclass(frozen=True)
class Kernels:
    """The kernels a training run uses, decided once when it starts and passed down: ``lib``
    the C library (None: TorchScript), ``ranking`` how the ranking loss's gradients are
    computed (``training.ranking_gradients``), ``why`` one line on what runs and why."""

    lib: ctypes.CDLL | None
    ranking: str
    why: str

    @property
    def name(self) -> str:
        return "torchscript" if self.lib is None else "native"

    def record(self) -> dict[str, str]:
        """What stats.jsonl and ``bigembed info`` show."""
        return {"kernels": self.name, "ranking_gradients": self.ranking, "kernels_why": self.why}


def choose(kernels: str, ranking: str, device_type: str = "cpu") -> Kernels:
    """Resolve ``training.kernels`` (``auto``, ``native``, ``torchscript``) and
    ``training.ranking_gradients`` into the kernels of a run, building the C library now if
    it is needed (before the first bucket). ``native`` where it cannot be had is an error."""
    if device_type != "cpu":
        return Kernels(None, ranking, f"on {device_type}: torch's own kernels (the C kernels are CPU code)")
    if kernels == "torchscript":
        return Kernels(None, ranking, f"TorchScript kernels (training.kernels = torchscript; {TORCHSCRIPT_COST})")
    lib, how = cbuild.load_explained(_SOURCE, _loaded, _declare)
    if lib is None:
        if kernels == "native":
            raise ConfigError(f"training.kernels = native: {how}; set training.kernels = auto to fall back to "
                              "the TorchScript kernels")
        return Kernels(None, ranking, f"TorchScript kernels: {how} ({TORCHSCRIPT_COST})")
    return Kernels(lib, ranking, f"native kernels: {how}")


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
                lr: float, max_norm: float, eps: float) -> None:
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
                             slot.data_ptr(), lr, max_norm, eps)
