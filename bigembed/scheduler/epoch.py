"""An epoch's plan: which (bucket, edge chunk) visits it makes, in what order, whether the
next partition is loaded in the background, and where negatives come from. Pure functions of
the training config and the number of partitions, so a resumed run makes the same plan."""

from __future__ import annotations

import numpy as np

from bigembed.config import TrainingConfig
from bigembed.errors import BigembedError
from bigembed.scheduler.orders import order_buckets
from bigembed.storage.edges import Bucket


def prefetches(t: TrainingConfig) -> bool:
    """Whether partitions are loaded in the background: with the beta order and c >= 3
    (the order then leaves the last slot free for the next partition)."""
    return t.prefetch and t.bucket_order == "beta" and t.buffer_partitions >= 3


def negatives_from_every_partition(t: TrainingConfig, P: int) -> bool:
    """Whether every partition is a source of negatives (``training.negative_partitions``).

    Only when the buffer holds all P: drawing from just the partitions that happen to be
    resident over-samples the query's own partition (CoDEx-S, P=4, c=2: 0.389 test MRR
    against 0.421 from the answer's partition alone) and would depend on what a resumed
    run has loaded so far."""
    where, c = t.negative_partitions, t.buffer_partitions
    if where == "all" and c < P:
        raise BigembedError(f"training.negative_partitions = all needs training.buffer_partitions >= {P} "
                            f"(the number of partitions), got {c}; or use answer")
    return P > 1 and c >= P and where != "answer"


def epoch_order(t: TrainingConfig, P: int, epoch: int) -> list[Bucket]:
    """The epoch's buckets. With prefetching and c >= 3, the order is planned for c - 1
    partitions so the last slot is free to receive the next one in the background."""
    plan_for = t.buffer_partitions - 1 if prefetches(t) else t.buffer_partitions
    return order_buckets(P, t.bucket_order, np.random.default_rng([t.seed, epoch]), plan_for)


def epoch_visits(t: TrainingConfig, P: int, epoch: int) -> list[tuple[Bucket, int]]:
    """The epoch's (bucket, edge chunk) visits: ``training.edge_chunks`` passes over the
    bucket order, every other one reversed (its first buckets need the partitions the
    previous pass ended with)."""
    order = epoch_order(t, P, epoch)
    n = t.edge_chunks
    return [(b, c) for c in range(n) for b in (order if c % 2 == 0 else order[::-1])]


def chunk_size(count: int, chunk: int, chunks: int) -> int:
    """Edges in chunk ``chunk`` of ``chunks`` of a bucket of ``count`` edges (every
    ``chunks``-th edge from position ``chunk``, so a sorted input file still mixes)."""
    return len(range(chunk, count, chunks))
