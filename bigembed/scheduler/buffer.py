"""The partition buffer: a bounded set of partitions held in memory while training."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

from bigembed.errors import BigembedError

T = TypeVar("T")


class PartitionBuffer(Generic[T]):
    """Holds at most ``capacity`` partitions, loading and writing back through callbacks.

    ``load(p)`` returns a partition's in-memory value; ``store(p, value, evicted)`` writes
    back a partition that was marked dirty (``evicted``: it leaves the buffer, else a
    :meth:`flush` writes it and it stays). When the buffer is full it evicts,
    among the partitions not requested, the one needed furthest in the future
    (Belady's rule; ``upcoming`` lists the partitions of the buckets still to
    come), or, when the future is not given, the least recently used.

    :meth:`prefetch` swaps in the next partition the order will need on a
    background thread (writing back the partition it replaces first), so the IO
    overlaps the training of the current bucket. Every other method waits for
    it to finish, so callers never see a half-done swap.
    """

    def __init__(self, capacity: int, load: Callable[[int], T], store: Callable[[int, T, bool], None]) -> None:
        if capacity < 2:
            raise BigembedError(f"partition buffer capacity must be >= 2, got {capacity}")
        self.capacity = capacity
        self._load = load
        self._store = store
        self._items: dict[int, T] = {}  # insertion order = recency
        self._dirty: set[int] = set()
        self.loads = 0
        self.prefetched = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None

    def __getitem__(self, partition: int) -> T:
        return self._items[partition]  # a partition being trained is never swapped out

    def __contains__(self, partition: int) -> bool:
        self.wait()
        return partition in self._items

    def resident(self) -> list[int]:
        self.wait()
        return list(self._items)

    def wait(self) -> None:
        """Let a running prefetch finish (re-raising its error, if it failed)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Wait for a running prefetch and stop the background thread."""
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None

    def prefetch(self, upcoming: Sequence[Iterable[int]], start: int, current: Iterable[int]) -> None:
        """Start loading, in the background, the first partition that ``upcoming[start:]``
        needs and the buffer lacks. With the buffer full it first writes back the partition
        not in ``current`` (the bucket being trained) needed furthest in the future, if that
        is later than the partition it makes room for (else nothing happens now)."""
        self.wait()
        busy = set(current)
        for i in range(start, len(upcoming)):
            missing = [q for q in upcoming[i] if q not in self._items]
            if missing:
                wanted, needed_at = missing[0], i
                break
        else:
            return
        victim = None
        if len(self._items) >= self.capacity:
            # The partition needed furthest in the future among those the current bucket
            # does not use, if it is needed later than the one it makes room for. (With an
            # order planned for one slot less, as training uses, this is the partition the
            # order is done with: BETA's cycling slot.)
            candidates = [q for q in self._items if q not in busy]
            uses = self._next_uses(candidates, upcoming, start)
            victim = max(candidates, key=uses.__getitem__) if candidates else None
            if victim is None or uses[victim] <= needed_at:
                return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="bigembed-prefetch")
        self._pending = self._pool.submit(self._swap, victim, wanted)

    def _swap(self, victim: int | None, wanted: int) -> None:
        if victim is not None:
            self.evict(victim)
        self._items[wanted] = self._load(wanted)
        self.loads += 1
        self.prefetched += 1

    def acquire(self, partitions: Iterable[int], upcoming: Sequence[Iterable[int]] | None = None,
                start: int = 0) -> None:
        """Make ``partitions`` resident (marking them dirty: they are about to be trained).

        ``upcoming[start:]``: the partitions of each bucket still to come, in order.
        """
        self.wait()
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
        next_use = self._next_uses(candidates, upcoming, start)
        return max(candidates, key=next_use.__getitem__)  # ties: the least recently used

    @staticmethod
    def _next_uses(candidates: list[int], upcoming: Sequence[Iterable[int]], start: int) -> dict[int, int]:
        """Index of the first bucket from ``start`` needing each candidate (len(upcoming): never)."""
        next_use = {q: len(upcoming) for q in candidates}
        pending = set(candidates)
        for i in range(start, len(upcoming)):
            for q in pending.intersection(upcoming[i]):
                next_use[q] = i
                pending.discard(q)
            if not pending:
                break
        return next_use

    def evict(self, partition: int) -> None:
        value = self._items.pop(partition)
        if partition in self._dirty:
            self._store(partition, value, True)
            self._dirty.discard(partition)

    def flush(self) -> list[int]:
        """Write back every dirty partition, keeping it resident; returns those written."""
        self.wait()
        written = sorted(self._dirty)
        for p in written:
            self._store(p, self._items[p], False)
        self._dirty.clear()
        return written

    def mark_dirty(self, partitions: Iterable[int]) -> None:
        """Mark resident ``partitions`` dirty again (a commit in the middle of a bucket flushed
        them, and the rest of the bucket goes on updating them)."""
        self.wait()
        self._dirty.update(p for p in partitions if p in self._items)

    def dirty(self) -> set[int]:
        self.wait()
        return set(self._dirty)
