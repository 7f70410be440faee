"""The distributed bucket lock: which rank trains which bucket visit, and who holds which partition.

Several trainers (ranks) share one epoch's visits. A rank *claims* a visit whose partitions no
other rank holds, trains it, and keeps its partitions until it claims a visit that does not
need them; those it then writes back and *releases*. Among the visits it may take, a rank
gets the one that needs the fewest loads (the most partitions it already holds), the earliest
in the epoch's order among equals, so every visit is trained exactly once an epoch. A rank
with nothing it may take releases what it holds (so two ranks never wait on each other's
partitions) and asks again.

In the first epoch of a new run a visit is taken only when one of its partitions was trained
before (PyTorch-BigGraph's rule): partitions that started apart are pulled into one space
rather than trained into separate ones.

:class:`LockState` is the rule, pure and JSON-serialisable; :class:`StoreLock` keeps it in a
key-value store shared by the ranks (torch.distributed's TCPStore), changed under a mutex
taken with the store's atomic compare-and-set. A rank also records where it staged each
partition it released (the shard entries of the version being written), so the next holder
reads the newest copy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Grant:
    """The lock's answer to a claim.

    ``kind``: ``bucket`` (train visit ``index`` from slab ``slab``; first write back and
    release ``release``), ``wait`` (nothing may be taken now: release ``release``, which is
    all the rank holds, and ask again), ``pause`` (a commit or stop is under way: release all
    and join it) or ``epoch_done`` (every visit of the epoch is trained). ``staged``: the
    newest staged shard entries of the visit's partitions. ``seq``/``time``: when it was
    granted, in the lock's order."""

    kind: str
    index: int = -1
    slab: int = 0
    release: tuple[int, ...] = ()
    staged: dict[str, Any] = field(default_factory=dict)  # shard key -> [partition, entry]
    seq: int = 0
    time: float = 0.0


@dataclass
class LockState:
    """One epoch's sharing-out. ``parts[i]``: the partitions visit ``i`` needs (not stored:
    every rank computes the epoch's order itself)."""

    epoch: int
    todo: list[int]  # visits not yet trained (nor being trained), in the epoch's order
    partial: dict[int, int] = field(default_factory=dict)  # visit -> slabs already trained
    running: dict[int, int] = field(default_factory=dict)  # rank -> visit
    held: dict[int, int] = field(default_factory=dict)  # partition -> rank
    touched: list[int] | None = None  # the first epoch of a new run: partitions trained so far
    staged: dict[str, Any] = field(default_factory=dict)  # shard key -> [partition, entry] (this version)
    seq: int = 0

    @classmethod
    def for_epoch(cls, epoch: int, visits: int, done: Sequence[int] = (), partial: dict[int, int] | None = None,
                  fresh: bool = False) -> LockState:
        """The state at the start (or, given what is ``done`` and ``partial``, the middle) of
        ``epoch``; ``fresh``: the first epoch of a new run (the touched rule applies)."""
        skip = set(done)
        return cls(epoch, [i for i in range(visits) if i not in skip], dict(partial or {}),
                   touched=[] if fresh else None)

    def to_json(self) -> str:
        return json.dumps({"epoch": self.epoch, "todo": self.todo, "partial": self.partial, "running": self.running,
                           "held": self.held, "touched": self.touched, "staged": self.staged, "seq": self.seq})

    @classmethod
    def from_json(cls, text: bytes | str) -> LockState:
        raw = json.loads(text)

        def ints(key: str) -> dict[int, int]:
            return {int(k): int(v) for k, v in raw[key].items()}

        return cls(int(raw["epoch"]), [int(i) for i in raw["todo"]], ints("partial"), ints("running"), ints("held"),
                   None if raw["touched"] is None else [int(p) for p in raw["touched"]], dict(raw["staged"]),
                   int(raw["seq"]))

    def mine(self, rank: int) -> set[int]:
        return {p for p, r in self.held.items() if r == rank}

    def claim(self, rank: int, parts: Sequence[Sequence[int]], paused: bool = False) -> Grant:
        """Grant ``rank`` its next visit (see :class:`Grant`); ``paused``: a commit is under way."""
        self.seq += 1
        mine = self.mine(rank)
        if rank in self.running:
            raise RuntimeError(f"rank {rank} claims a visit while visit {self.running[rank]} is not finished")
        if paused:
            return Grant("pause", release=tuple(sorted(mine)), seq=self.seq, time=time.time())
        if not self.todo and not self.running:
            return Grant("epoch_done", release=tuple(sorted(mine)), seq=self.seq, time=time.time())
        touched = None if self.touched is None or not self.touched else set(self.touched)
        left: dict[int, int] = {}  # partition -> visits still to train that need it
        for i in self.todo:
            for p in set(parts[i]):
                left[p] = left.get(p, 0) + 1
        best, best_score = -1, (-3, 0)  # below any visit's (at most two loads)
        for position, i in enumerate(self.todo):
            need = set(parts[i])
            if any(self.held.get(p, rank) != rank for p in need):
                continue
            if touched is not None and need and not need & touched:
                continue
            # the fewest loads; then the partitions with the most work left, so that the end of
            # the epoch is not left to one partition's visits, which only one rank can train
            score = (len(need & mine) - len(need), sum(left[p] for p in need))
            if score > best_score:
                best, best_score = position, score
        if best < 0:
            return Grant("wait", release=tuple(sorted(mine)), seq=self.seq, time=time.time())
        index = self.todo.pop(best)
        need = set(parts[index])
        for p in need:
            self.held[p] = rank
        if self.touched is not None:
            self.touched = sorted(set(self.touched) | need)
        self.running[rank] = index
        staged = {k: v for k, v in self.staged.items() if v[0] in need}
        return Grant("bucket", index, self.partial.pop(index, 0), tuple(sorted(mine - need)), staged,
                     self.seq, time.time())

    def finish(self, rank: int, index: int, stopped_at: int | None = None) -> None:
        """``rank`` is done with visit ``index``; ``stopped_at``: it stopped after that many
        slabs (a pause), and the rest goes back to the front of the epoch's order."""
        if self.running.get(rank) != index:
            raise RuntimeError(f"rank {rank} finishes visit {index}, which it was not granted")
        del self.running[rank]
        if stopped_at is not None:
            self.partial[index] = stopped_at
            self.todo.insert(0, index)
            self.todo.sort()

    def release(self, rank: int, partitions: Sequence[int], staged: dict[str, Any]) -> tuple[int, float]:
        """``rank`` wrote back ``partitions`` (``staged``: shard key -> [partition, entry], what
        it staged for them) and gives them up. Returns the lock's (seq, time) of the release."""
        self.seq += 1
        for p in partitions:
            if self.held.get(p) != rank:
                raise RuntimeError(f"rank {rank} releases partition {p}, which it does not hold")
            del self.held[p]
        self.staged.update(staged)
        return self.seq, time.time()

    def position(self, visits: int) -> tuple[int, int, list[int], dict[int, int]]:
        """Where the epoch stands between visits: (first visit not done, its slabs done, the
        later visits done, the later visits partly done)."""
        if self.running:
            raise RuntimeError(f"visits {sorted(self.running.values())} are still being trained")
        first = min(self.todo, default=visits)
        left = set(self.todo)
        done = [i for i in range(first + 1, visits) if i not in left]
        partial = {i: s for i, s in self.partial.items() if i > first}
        return first, self.partial.get(first, 0), done, partial


class KeyValueStore(Protocol):
    """What :class:`StoreLock` needs of a store (torch.distributed.Store has it)."""

    def set(self, key: str, value: str | bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def compare_set(self, key: str, expected: str, desired: str) -> bytes: ...
    def check(self, keys: list[str]) -> bool: ...
    def delete_key(self, key: str) -> bool: ...


class StoreMutex:
    """A mutex on a key of ``store``, taken with its atomic compare-and-set (``with mutex:``)."""

    def __init__(self, store: KeyValueStore, key: str, rank: int) -> None:
        self.store, self.key, self.me = store, key, f"r{rank}"
        self.takes = 0
        self.waited = 0.0  # seconds spent waiting for it

    def __enter__(self) -> None:
        delay, started = 0.0002, time.perf_counter()
        while self.store.compare_set(self.key, "", self.me) != self.me.encode():
            time.sleep(delay)
            delay = min(delay * 2, 0.005)
        self.waited += time.perf_counter() - started
        self.takes += 1

    def __exit__(self, *_: object) -> None:
        self.store.compare_set(self.key, self.me, "")


class StoreLock:
    """The :class:`LockState` of the job, kept in ``store`` and changed by one rank at a time."""

    STATE, PAUSE = "lock/state", "lock/pause"

    def __init__(self, store: KeyValueStore, rank: int) -> None:
        self.store, self.rank = store, rank
        self.mutex = StoreMutex(store, "lock/mutex", rank)

    def reset(self, state: LockState) -> None:
        """Start a new sharing-out (rank 0, while the others wait at a barrier)."""
        self.store.set(self.STATE, state.to_json())
        self.store.delete_key(self.PAUSE)

    def _change(self, change: Callable[[LockState], Any]) -> Any:
        with self.mutex:
            state = LockState.from_json(self.store.get(self.STATE))
            out = change(state)
            self.store.set(self.STATE, state.to_json())
        return out

    def state(self) -> LockState:
        return LockState.from_json(self.store.get(self.STATE))

    def claim(self, parts: Sequence[Sequence[int]]) -> Grant:
        paused = self.paused()
        return self._change(lambda s: s.claim(self.rank, parts, paused is not None))

    def finish(self, index: int, stopped_at: int | None = None) -> None:
        self._change(lambda s: s.finish(self.rank, index, stopped_at))

    def release(self, partitions: Sequence[int], staged: dict[str, Any]) -> tuple[int, float]:
        return self._change(lambda s: s.release(self.rank, partitions, staged))

    def pause(self, why: str) -> None:
        """Ask every rank to stop taking visits (a commit is due, or ``stop:SIGNAL``). A stop
        is never downgraded to a commit."""
        if self.paused() != why and not (self.paused() or "").startswith("stop"):
            self.store.set(self.PAUSE, why)

    def resume(self) -> None:
        """Let the ranks take visits again (rank 0, after the commit)."""
        self.store.delete_key(self.PAUSE)

    def paused(self) -> str | None:
        if not self.store.check([self.PAUSE]):
            return None
        return self.store.get(self.PAUSE).decode()
