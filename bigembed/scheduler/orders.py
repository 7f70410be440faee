"""Bucket orders: the sequence in which an epoch visits the P x P buckets."""

from __future__ import annotations

from collections.abc import Callable

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


def beta_states(P: int, c: int) -> list[list[int]]:
    """The successive contents of a buffer of ``c`` partitions under BETA (Marius, Mohoney
    et al., OSDI 2021), for partitions ``0..P-1``.

    The buffer starts with partitions ``0..c-1``. A round keeps ``c - 1`` of its
    partitions fixed and cycles the last slot through every unfinished partition
    not in the buffer, one swap each; the fixed ones have then met every partition
    and are finished. The next round keeps the partition in the last slot and swaps
    the finished ones for up to ``c - 1`` unfinished ones. When every unfinished
    partition fits, the epoch ends. Every pair of partitions shares the buffer at
    least once, so each bucket can be trained while its two partitions are resident.
    """
    if c < 2:
        raise ConfigError(f"training.buffer_partitions: must be >= 2, got {c}")
    remaining = list(range(P))
    buffer = remaining[:c]
    states = [list(buffer)]
    while len(remaining) > c:
        fixed = buffer[: c - 1]
        for x in [x for x in remaining if x not in buffer]:
            buffer = [*fixed, x]
            states.append(list(buffer))
        remaining = [x for x in remaining if x not in fixed]
        last = buffer[-1]
        buffer = [last, *[x for x in remaining if x != last][: c - 1]]
        states.append(list(buffer))
    return states


def beta_swaps(P: int, c: int) -> int:
    """Partitions BETA loads after the first ``c`` in one epoch, in closed form.

    With ``n_k = P - k (c - 1)`` partitions unfinished at round ``k`` and
    ``R = ceil((P - c) / (c - 1))`` rounds, round ``k`` cycles ``n_k - c`` partitions
    through the last slot and then brings in ``c - 1`` new ones, except the last
    round, which brings in the ``n_R - 1`` that are left. For ``c = 2`` this is
    ``(P - 1)(P - 2) / 2 + P - 2``; it grows as ``P^2 / (2 (c - 1))``.
    """
    if c >= P:
        return 0
    R = -(-(P - c) // (c - 1))
    cycled = R * (P - c) - (c - 1) * R * (R - 1) // 2
    return cycled + (R - 1) * (c - 1) + (P - R * (c - 1) - 1)


def _beta(P: int, c: int, rng: np.random.Generator) -> list[Bucket]:
    """Buckets in BETA order: each buffer state trains the buckets it makes possible for
    the first time, shuffled; partitions are relabelled by a random permutation."""
    labels = rng.permutation(P)
    done = np.zeros((P, P), dtype=bool)
    out: list[Bucket] = []
    for state in beta_states(P, c):
        new = [(i, j) for i in state for j in state if not done[i, j]]
        for k in rng.permutation(len(new)):
            i, j = new[k]
            done[i, j] = True
            out.append(Bucket(int(labels[i]), int(labels[j])))
    return out


def _all(P: int) -> list[Bucket]:
    return [Bucket(i, j) for i in range(P) for j in range(P)]


def _random(P: int, rng: np.random.Generator) -> list[Bucket]:
    buckets = _all(P)
    return [buckets[i] for i in rng.permutation(len(buckets))]


# The bucket orders by name: each gives all P x P buckets once, from (P, rng, buffer capacity).
ORDERS: dict[str, Callable[[int, np.random.Generator, int], list[Bucket]]] = {
    "inside_out": lambda P, rng, c: _inside_out(P, rng),
    "outside_in": lambda P, rng, c: _inside_out(P, rng)[::-1],
    "beta": lambda P, rng, c: _beta(P, c, rng),
    "random": lambda P, rng, c: _random(P, rng),
    "sequential": lambda P, rng, c: _all(P),
}


def order_buckets(P: int, order: str, rng: np.random.Generator, capacity: int = 2) -> list[Bucket]:
    """All P x P buckets, each exactly once, in the named ``order`` (``beta`` plans for a
    buffer of ``capacity`` partitions)."""
    try:
        make = ORDERS[order]
    except KeyError:
        raise ConfigError(f"training.bucket_order: must be one of {', '.join(ORDERS)}, got {order!r}") from None
    return make(P, rng, capacity)
