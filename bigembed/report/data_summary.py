"""The DATA side of the training report: nodes per entity type and partition, edges per
relation and split, and the degree distribution of the training edges.

Everything is streamed from the bucket files (memory-mapped) a slice of ``SLICE`` edges at a
time; the only array that grows with the graph is one partition's degree counts (int64 per
node of that partition), built one partition after another. Memory: one partition's rows x
8 bytes + a slice; never the edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bigembed.storage.data_manifest import DataManifest
from bigembed.storage.edges import Bucket, read_edges

SLICE = 1 << 20  # edges read at a time


@dataclass(frozen=True)
class DataSummary:
    path: Path
    types: dict[str, list[int]]  # entity type -> nodes per partition
    relations: list[str]
    relation_edges: dict[str, list[int]]  # split -> edges per relation (in ``relations`` order)
    degree_counts: np.ndarray  # (max degree + 1,) int64: nodes with each total (in + out) train degree

    @property
    def nodes(self) -> int:
        return sum(sum(c) for c in self.types.values())

    @property
    def isolated(self) -> int:
        """Nodes with no training edge."""
        return int(self.degree_counts[0]) if self.degree_counts.size else 0

    @property
    def max_degree(self) -> int:
        return int(self.degree_counts.size - 1)


def _slices(column: np.ndarray) -> list[np.ndarray]:
    return [column[i:i + SLICE] for i in range(0, column.shape[0], SLICE)]


def _relation_counts(data: DataManifest, split: str) -> list[int]:
    counts = np.zeros(len(data.relations), np.int64)
    for key, count in data.bucket_counts[split].items():
        if count:
            edges = read_edges(data.path.parent, split, Bucket.from_key(key), count, False, data.edge_dtypes)
            for part in _slices(edges.rel):
                counts += np.bincount(np.asarray(part, np.int64), minlength=len(data.relations))[:len(counts)]
    return [int(c) for c in counts]


def degree_histogram(data: DataManifest, split: str = "train") -> np.ndarray:
    """``out[d]``: how many nodes have ``d`` edges of ``split`` (as lhs or rhs; a self-loop counts
    twice), partition by partition."""
    hist = np.zeros(1, np.int64)
    P = data.num_partitions
    for p in range(P):
        degree = np.zeros(data.entity_counts[p], np.int64)
        for q in range(P):
            for bucket, side in ((Bucket(p, q), "lhs"), (Bucket(q, p), "rhs")):
                count = data.edge_count(split, bucket)
                if not count:
                    continue
                edges = read_edges(data.path.parent, split, bucket, count, False, data.edge_dtypes)
                for part in _slices(getattr(edges, side)):
                    degree += np.bincount(np.asarray(part, np.int64), minlength=degree.size)
        counts = np.bincount(degree) if degree.size else np.zeros(1, np.int64)
        if counts.size > hist.size:
            hist = np.pad(hist, (0, counts.size - hist.size))
        hist[:counts.size] += counts
    return hist


def summarise_data(data: DataManifest) -> DataSummary:
    """Stream ``data``'s bucket files once per split (twice for the training edges' degrees)."""
    return DataSummary(
        path=data.path.parent,
        types={t.name: list(t.counts) for t in data.entity_types},
        relations=list(data.relations),
        relation_edges={split: _relation_counts(data, split) for split in data.splits()},
        degree_counts=degree_histogram(data, "train"),
    )
