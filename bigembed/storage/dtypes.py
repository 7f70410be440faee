"""Storage precision of embedding tables: float32, float16 or bfloat16.

``training.storage_dtype`` sets how a partition's embeddings are held, on disk
and in the partition buffer; the math always runs in float32 (rows are widened
when gathered and rounded to nearest when written back). Half precision halves
the bytes of every embedding row, so twice the nodes fit a memory budget and
checkpoints and partition swaps move half the data.

On disk a float16 table is a float16 zarr array. NumPy (and so zarr) has no
bfloat16, so a bfloat16 table is stored as the raw 16 bits in a ``uint16`` zarr
array with the attribute ``"bigembed_dtype": "bfloat16"``; no float table is ever
``uint16``, so the dtype alone says how to read it. Optimizer state stays
float32 whatever the storage (Adagrad's running sums lose too much in 16 bits).
Readers outside training (evaluation, export) widen everything to float32.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from bigembed.config import STORAGE_DTYPES

TORCH_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in STORAGE_DTYPES}
BFLOAT16_BITS = np.dtype(np.uint16)  # how a bfloat16 table looks to NumPy and zarr


def storage_dtype(name: str) -> torch.dtype:
    return TORCH_DTYPES[name]


def itemsize(name: str) -> int:
    """Bytes per stored embedding value."""
    return torch.empty(0, dtype=TORCH_DTYPES[name]).element_size()


def to_numpy(table: Tensor) -> np.ndarray:
    """The array to write for ``table`` (no copy): bfloat16 as its bits in ``uint16``."""
    if table.dtype == torch.bfloat16:
        return table.view(torch.int16).numpy().view(BFLOAT16_BITS)
    return table.numpy()


def from_numpy(array: np.ndarray) -> Tensor:
    """The tensor a stored array holds (no copy): ``uint16`` is read as bfloat16 bits."""
    if array.dtype == BFLOAT16_BITS:
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def dtype_name(array: np.ndarray) -> str:
    """The storage dtype of a stored table (``uint16``: bfloat16)."""
    return "bfloat16" if array.dtype == BFLOAT16_BITS else array.dtype.name


def to_float32(array: np.ndarray) -> np.ndarray:
    """A stored table widened to float32 exactly (no copy when it is float32 already)."""
    if array.dtype == BFLOAT16_BITS:  # bfloat16 is the top half of a float32
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(np.float32, copy=False)


def all_finite(array: np.ndarray) -> bool:
    """Whether every value of a stored table is finite, in one pass without a copy of it.

    float32: NaN x 0 and inf x 0 are NaN, so a product with zeros is NaN exactly when a row
    holds a non-finite value (a BLAS matrix-vector product: 60 ms for 256 MB here, against
    90 ms for ``np.isfinite(...).all()`` and its temporary). bfloat16 bits: the exponent is
    all ones."""
    if array.size == 0:
        return True
    if array.dtype == BFLOAT16_BITS:
        return not bool(((array & 0x7F80) == 0x7F80).any())
    if array.dtype == np.float32 and array.ndim == 2 and array.flags.c_contiguous:
        with np.errstate(invalid="ignore"):
            return bool(np.isfinite((array @ np.zeros(array.shape[1], np.float32)).sum()))
    return bool(np.isfinite(array).all())
