"""Bucket orders: the sequence in which an epoch visits the P x P buckets."""

from __future__ import annotations

import numpy as np

from bigembed.errors import ConfigError
from bigembed.storage.edges import Bucket


def _inside_out(P: int, rng: np.random.Generator) -> list[Bucket]:
    """Grow a square of visited buckets one partition at a time.

    Partitions are relabelled by a random permutation. Shell ``k`` adds partition
    ``k``: first ``(k, k)``, then ``(k, j)`` and ``(j, k)`` for each earlier ``j``
    in random order, so consecutive buckets share at least one partition and a
    buffer of two partitions loads one new partition per pair.
    """
    labels = rng.permutation(P)
    out: list[Bucket] = []
    for k in range(P):
        a = int(labels[k])
        out.append(Bucket(a, a))
        for j in rng.permutation(k):
            b = int(labels[j])
            pair = [Bucket(a, b), Bucket(b, a)]
            if rng.random() < 0.5:
                pair.reverse()
            out.extend(pair)
    return out


def order_buckets(P: int, order: str, rng: np.random.Generator) -> list[Bucket]:
    """All P x P buckets, each exactly once, in the named ``order``."""
    if order == "inside_out":
        return _inside_out(P, rng)
    if order == "outside_in":
        return _inside_out(P, rng)[::-1]
    buckets = [Bucket(i, j) for i in range(P) for j in range(P)]
    if order == "sequential":
        return buckets
    if order == "random":
        return [buckets[i] for i in rng.permutation(len(buckets))]
    raise ConfigError(
        f"training.bucket_order: must be one of inside_out, outside_in, random, sequential, got {order!r}"
    )
