"""Negative sampling: rows of a partition shared by every edge of a chunk."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor


def sample_uniform(num_rows: int, num_chunks: int, per_chunk: int, generator: torch.Generator) -> Tensor:
    """(num_chunks, per_chunk) int64 row indices drawn uniformly from ``[0, num_rows)``."""
    if per_chunk == 0 or num_rows == 0:
        return torch.empty(num_chunks, 0, dtype=torch.long)
    return torch.randint(num_rows, (num_chunks, per_chunk), generator=generator)


def sample_negatives(num_rows: int, num_chunks: int, per_chunk: int, degree_fraction: float,
                     pool: Tensor | None, generator: torch.Generator, low: int = 0) -> Tensor:
    """(num_chunks, per_chunk) rows: ``round(degree_fraction * per_chunk)`` of each chunk's
    drawn from ``pool`` (the side's endpoints of the slab's edges, so a node comes up in
    proportion to its degree, as Marius does), the rest uniformly from
    ``[low, low + num_rows)`` (one entity type's rows)."""
    k = round(degree_fraction * per_chunk) if pool is not None and pool.numel() else 0
    uniform = sample_uniform(num_rows, num_chunks, per_chunk - k, generator)
    if low:
        uniform += low
    if not k:
        return uniform
    assert pool is not None
    picks = pool[torch.randint(pool.shape[0], (num_chunks, k), generator=generator)]
    return torch.cat([picks.long(), uniform], 1)


@lru_cache(maxsize=64)
def in_chunk_mask(chunk: int, total: int) -> Tensor:
    """(chunk, total) bool: True where candidate ``j < chunk`` is the edge's own positive (j == i).

    Cached (it depends only on the sizes); callers must not modify it.
    """
    mask = torch.zeros(chunk, total, dtype=torch.bool)
    idx = torch.arange(chunk)
    mask[idx, idx] = True
    return mask
