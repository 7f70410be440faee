"""The scheduler: which bucket to train next and which partitions are in memory.

Policy: each epoch visits all P x P buckets exactly once, in an order chosen by
name (``inside_out`` by default; ``beta`` plans for a buffer of c partitions)
and randomised by a seeded generator. The partition buffer holds at most
``capacity`` partitions; a bucket's two partitions are loaded on demand and,
when the buffer is full, the resident partition needed furthest in the future
is evicted (written back through a callback).

Invariants: ``order_buckets`` returns a permutation of all P x P buckets;
the buffer never holds more than ``capacity`` partitions; every partition
modified in memory is handed to the write-back callback before it is dropped.

Example::

    rng = np.random.default_rng(seed)
    for bucket in order_buckets(4, "inside_out", rng):
        buffer.acquire([bucket.lhs, bucket.rhs])   # loads / evicts as needed
        train(buffer[bucket.lhs], buffer[bucket.rhs])
    buffer.flush()                                  # write back what is dirty
"""

from bigembed.scheduler.buffer import PartitionBuffer
from bigembed.scheduler.orders import order_buckets

__all__ = ["PartitionBuffer", "order_buckets"]
