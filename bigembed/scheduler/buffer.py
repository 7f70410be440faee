"""The partition buffer: a bounded set of partitions held in memory while training."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

from bigembed.errors import BigembedError

T = TypeVar("T")


class PartitionBuffer(Generic[T]):
    """Holds at most ``capacity`` partitions, loading and writing back through callbacks.

    ``load(p)`` returns a partition's in-memory value; ``store(p, value)`` writes
    back a partition that was marked dirty. When the buffer is full it evicts,
    among the partitions not requested, the one needed furthest in the future
    (Belady's rule; ``upcoming`` lists the partitions of the buckets still to
    come), or, when the future is not given, the least recently used.
    """

    def __init__(self, capacity: int, load: Callable[[int], T], store: Callable[[int, T], None]) -> None:
        if capacity < 2:
            raise BigembedError(f"partition buffer capacity must be >= 2, got {capacity}")
        self.capacity = capacity
        self._load = load
        self._store = store
        self._items: dict[int, T] = {}  # insertion order = recency
        self._dirty: set[int] = set()
        self.loads = 0

    def __getitem__(self, partition: int) -> T:
        return self._items[partition]

    def __contains__(self, partition: int) -> bool:
        return partition in self._items

    def resident(self) -> list[int]:
        return list(self._items)

    def acquire(self, partitions: Iterable[int], upcoming: Sequence[Iterable[int]] | None = None,
                start: int = 0) -> None:
        """Make ``partitions`` resident (marking them dirty: they are about to be trained).

        ``upcoming[start:]``: the partitions of each bucket still to come, in order.
        """
        wanted = list(dict.fromkeys(partitions))
        if len(wanted) > self.capacity:
            raise BigembedError(f"a bucket needs {len(wanted)} partitions but the buffer holds {self.capacity}")
        for p in wanted:
            if p in self._items:
                self._items[p] = self._items.pop(p)  # refresh recency
        for p in wanted:
            if p in self._items:
                continue
            while len(self._items) >= self.capacity:
                self.evict(self._victim(wanted, upcoming, start))
            self._items[p] = self._load(p)
            self.loads += 1
        self._dirty.update(wanted)

    def _victim(self, wanted: list[int], upcoming: Sequence[Iterable[int]] | None, start: int) -> int:
        candidates = [q for q in self._items if q not in wanted]  # least recently used first
        if upcoming is None:
            return candidates[0]
        next_use = {q: len(upcoming) for q in candidates}
        pending = set(candidates)
        for i in range(start, len(upcoming)):
            for q in pending.intersection(upcoming[i]):
                next_use[q] = i
                pending.discard(q)
            if not pending:
                break
        return max(candidates, key=next_use.__getitem__)  # ties: the least recently used

    def evict(self, partition: int) -> None:
        value = self._items.pop(partition)
        if partition in self._dirty:
            self._store(partition, value)
            self._dirty.discard(partition)

    def flush(self) -> list[int]:
        """Write back every dirty partition, keeping it resident; returns those written."""
        written = sorted(self._dirty)
        for p in written:
            self._store(p, self._items[p])
        self._dirty.clear()
        return written

    def dirty(self) -> set[int]:
        return set(self._dirty)
