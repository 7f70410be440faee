"""The memory model, and choosing partitions and buffer size for a memory budget.

While training, resident memory is about::

    c x (rows of the largest partition) x bytes per row   the partition buffer
    + workers x (rows of the largest partition) x 4 B      each worker's Adagrad row slots
    + one slab of a bucket's edges (at most 4 M edges)     shuffled copies of lhs/rhs/rel/weight
    + a fixed overhead                                      Python, torch, zarr, allocator slack

A row is the embedding (dim values of ``training.storage_dtype``: 4 bytes each, or 2
in half precision) plus its Adagrad state (one float32, or dim of them with
``training.optimizer = "adagrad"``). All-negatives batches build a dense float32
gradient for a whole partition, so they add about 3 partition-sized float32
temporaries (4 in half precision: the table's float32 copy).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

from bigembed.config import TrainingConfig
from bigembed.errors import BigembedError

FIXED_OVERHEAD = 480 << 20  # measured: ~255 MiB for Python + torch + zarr, plus up to ~220 MiB
# that the allocator keeps after frees (trim threshold 256 MB, see trainer/allocator.py) and IO buffers
# Edges shuffled and trained together (bigembed.trainer.bucket): bounds a bucket's resident copy
# (about 60 MB with the shuffle's index arrays), so peak memory does not grow with the bucket.
SLAB_EDGES = 1_000_000
EDGE_BYTES = 2 * (8 + 8 + 4 + 4)  # lhs, rhs, rel, weight; read, then shuffled
SLOT_BYTES = 4  # a worker's int32 scratch per row (bigembed.trainer.adagrad.row_slots)
UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(text: str) -> int:
    """``"8G"``, ``"512M"``, ``"1.5GiB"``, ``"1000000"`` -> bytes (units are powers of 1024)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgtKMGT]?)(?:i?[bB])?\s*", text)
    if not m:
        raise BigembedError(f"--memory: expected a size such as 8G, 512M or 1.5GiB, got {text!r}")
    return int(float(m.group(1)) * UNITS[m.group(2).lower()])


def resolve_workers(config: TrainingConfig) -> int:
    """Hogwild worker threads a run uses (``training.workers``, 0: one per core, at most 8)."""
    if config.deterministic:
        return 1
    if config.workers > 0:
        return config.workers
    return max(1, min(8, os.cpu_count() or 1))


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


@dataclass(frozen=True)
class MemoryModel:
    dim: int
    per_coordinate: bool = False  # training.optimizer = "adagrad"
    all_negatives: bool = False
    itemsize: int = 4  # bytes per stored embedding value (training.storage_dtype)
    workers: int = 2  # Hogwild workers, each with its row slots

    @property
    def row_bytes(self) -> int:
        return self.itemsize * self.dim + 4 * (self.dim if self.per_coordinate else 1)

    def estimate(self, partition_rows: int, c: int, bucket_edges: int = SLAB_EDGES) -> int:
        """Peak bytes with ``c`` partitions of at most ``partition_rows`` rows in memory."""
        buffer = c * partition_rows * self.row_bytes
        copies = 3 if self.itemsize == 4 else 4
        temporaries = copies * partition_rows * 4 * self.dim if self.all_negatives else 0
        slots = self.workers * partition_rows * SLOT_BYTES
        return buffer + slots + temporaries + min(bucket_edges, SLAB_EDGES) * EDGE_BYTES + FIXED_OVERHEAD


def batch_bytes(dim: int, batch_size: int, chunk_size: int, negatives: int, all_negatives_rows: int = 0) -> int:
    """Peak bytes of one worker's batch temporaries: per chunk of ``chunk_size`` edges and
    side, the ``negatives`` sampled rows and their gradients, and the score blocks (scores,
    hinges, gradients); with all-negatives, a batch's scores against every row."""
    chunks = -(-batch_size // max(1, chunk_size))
    rows = 2 * chunks * negatives * dim * 4 * 2  # both sides; rows and their gradients
    scores = 2 * chunks * min(chunk_size, batch_size) * (min(chunk_size, batch_size) + negatives) * 4 * 3
    return rows + scores + 3 * batch_size * all_negatives_rows * 4


def peak_rss_bytes() -> int | None:
    """This process's peak resident memory so far, in bytes (``ru_maxrss``: KiB on Linux, bytes
    on macOS); None where ``resource`` is missing (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def available_memory() -> int | None:
    """Bytes this process can still allocate, about: MemAvailable, capped by what a cgroup (v2)
    limit leaves; physical memory where neither can be read; None where nothing can be."""
    found: list[int] = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":
            found.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    if not found:  # no /proc (not Linux): physical memory, an upper bound
        try:
            found.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            pass
    return min(found) if found else None


@dataclass(frozen=True)
class BufferChoice:
    c: int
    estimate: int
    message: str


def choose_buffer(model: MemoryModel, partition_counts: list[int], bucket_edges: int, budget: int) -> BufferChoice:
    """The largest buffer (2 <= c <= P) whose estimate fits ``budget``; an error naming the
    number of partitions to import with when even two do not fit."""
    P = len(partition_counts)
    rows = max(partition_counts) if partition_counts else 0
    for c in range(max(2, P), 1, -1):
        need = model.estimate(rows, min(c, P), bucket_edges)
        if need <= budget:
            held = "all" if c >= P else f"{c} of {P}"
            return BufferChoice(c, need, f"memory budget {human(budget)}: holding {held} partitions "
                                         f"(about {human(need)} at peak)")
    total = sum(partition_counts)
    suggest = partitions_for(model, total, budget, bucket_edges)
    hint = (f"import again with -p {suggest} (or `bigembed import --memory {human(budget)} --dim "
            f"{model.dim}`)") if suggest else "no number of partitions fits it: raise --memory"
    raise BigembedError(
        f"--memory {human(budget)}: two partitions of {rows} rows need about "
        f"{human(model.estimate(rows, 2, bucket_edges))} with dim {model.dim}; {hint}"
    )


def partitions_for(model: MemoryModel, num_nodes: int, budget: int, num_edges: int = SLAB_EDGES,
                   limit: int = 4096) -> int | None:
    """The fewest partitions (fewest loads per epoch) whose two-partition estimate fits
    ``budget``; None if none up to ``limit`` does. A bucket is taken to hold about
    1.2 / P^2 of the ``num_edges`` training edges (nodes are spread at random)."""
    for P in range(1, limit + 1):
        rows = -(-num_nodes // P)
        if model.estimate(rows, min(2, P), int(1.2 * num_edges / P**2) + 1) <= budget:
            return P
    return None
