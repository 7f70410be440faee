"""Allocator tuning for training: keep freed score buffers in the heap.

Each batch allocates and frees the same few tens of MB of scores. glibc serves
blocks above its mmap threshold with fresh mappings, so every batch would fault
its pages in again (measured: a third of the CPU time in the kernel for
all-negatives batches). Raising the threshold to its 32 MB maximum and the trim
threshold to 256 MB makes the heap reuse them. A no-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_freed_buffers() -> bool:
    """Tune glibc's malloc for the training loop; returns whether it applied."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 256 << 20))
