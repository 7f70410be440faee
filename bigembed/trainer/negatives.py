"""Negative sampling: rows of a partition shared by every edge of a chunk."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor


def sample_uniform(num_rows: int, num_chunks: int, per_chunk: int, generator: torch.Generator) -> Tensor:
    """(num_chunks, per_chunk) int64 row indices drawn uniformly from ``[0, num_rows)``, on
    ``generator``'s device."""
    if per_chunk == 0 or num_rows == 0:
        return torch.empty(num_chunks, 0, dtype=torch.long, device=generator.device)
    return torch.randint(num_rows, (num_chunks, per_chunk), generator=generator, device=generator.device)


def degree_count(per_chunk: int, degree_fraction: float, pool: Tensor | None) -> int:
    """How many of a chunk's ``per_chunk`` sampled negatives come from the degree pool."""
    return round(degree_fraction * per_chunk) if pool is not None and pool.numel() else 0


def share_uniform(count: int, sizes: list[int]) -> list[int]:
    """Split ``count`` uniform negatives between partitions holding ``sizes`` rows of the
    entity type, in proportion to their sizes (largest remainders), so that together they
    are uniform over the union."""
    total = sum(sizes)
    if not total:
        return [count] + [0] * (len(sizes) - 1)
    exact = [count * n / total for n in sizes]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda i: shares[i] - exact[i])
    for i in by_remainder[: count - sum(shares)]:
        shares[i] += 1
    return shares


def sample_negatives(num_rows: int, num_chunks: int, per_chunk: int, degree_fraction: float,
                     pool: Tensor | None, generator: torch.Generator, low: int = 0,
                     k: int | None = None) -> Tensor:
    """(num_chunks, per_chunk) rows: ``round(degree_fraction * per_chunk)`` of each chunk's
    (or ``k``) drawn from ``pool`` (the side's endpoints of the slab's edges, so a node comes
    up in proportion to its degree, as Marius does), the rest uniformly from
    ``[low, low + num_rows)`` (one entity type's rows)."""
    if k is None:
        k = degree_count(per_chunk, degree_fraction, pool)
    uniform = sample_uniform(num_rows, num_chunks, per_chunk - k, generator)
    if low:
        uniform += low
    if not k:
        return uniform
    assert pool is not None
    picks = pool[torch.randint(pool.shape[0], (num_chunks, k), generator=generator, device=generator.device)]
    return torch.cat([picks.long(), uniform], 1)


@lru_cache(maxsize=64)
def in_chunk_mask(chunk: int, total: int, device: torch.device | None = None) -> Tensor:
    """(chunk, total) bool: True where candidate ``j < chunk`` is the edge's own positive (j == i).

    Cached (it depends only on the sizes and device); callers must not modify it.
    """
    mask = torch.zeros(chunk, total, dtype=torch.bool, device=device)
    idx = torch.arange(chunk, device=device)
    mask[idx, idx] = True
    return mask
