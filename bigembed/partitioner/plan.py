"""Pass 1 of an import: dictionaries, partition assignment, sizes (no writing)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bigembed.errors import InputFormatError
from bigembed.partitioner.reader import ColumnSpec, EdgeChunk, read_chunks

DEFAULT_RELATION = "edge"


@dataclass(frozen=True)
class Source:
    split: str
    path: Path


@dataclass(frozen=True)
class ImportSpec:
    """What to import and how. ``ids`` is ``"string"`` (dictionary) or ``"int"`` (dense ids)."""

    sources: list[Source]
    num_partitions: int = 1
    columns: ColumnSpec = field(default_factory=lambda: ColumnSpec.parse("lhs,rel,rhs"))
    delimiter: str = "\t"
    ids: str = "string"
    seed: int = 0
    entity: str = "node"
    chunk_size: int = 500_000


@dataclass
class PartitionPlan:
    """Everything pass 2 needs: node -> (partition, offset), relation names, sizes.

    ``partition_of``/``offset_of``: (num_entities,) arrays indexed by the node's
    dictionary index (string ids) or by the id itself (int ids).
    """

    spec: ImportSpec
    node_index: dict[str, int] | None
    relation_index: dict[str, int]
    partition_of: np.ndarray
    offset_of: np.ndarray
    entity_counts: list[int]
    edges_per_split: dict[str, int]

    @property
    def num_entities(self) -> int:
        return int(self.partition_of.shape[0])

    def members_by_partition(self) -> list[np.ndarray]:
        """For each partition, the dictionary indices of its nodes in offset order (one sort)."""
        order = np.lexsort((self.offset_of, self.partition_of))
        bounds = np.cumsum([0, *self.entity_counts])
        return [order[bounds[p] : bounds[p + 1]] for p in range(self.spec.num_partitions)]

    def summary(self) -> str:
        sizes = ", ".join(str(c) for c in self.entity_counts)
        splits = ", ".join(f"{s}={n}" for s, n in self.edges_per_split.items())
        return (
            f"{self.num_entities} nodes ({self.spec.ids} ids) in {self.spec.num_partitions} "
            f"partitions [{sizes}], {len(self.relation_index)} relations, edges: {splits}"
        )


Progress = Callable[[int], None]


def add_first_seen(index: dict[str, int], lhs: list[str], rhs: list[str]) -> None:
    """Give unseen names the next ids, in first-appearance order (lhs then rhs, line by line).

    The order does not depend on how the file is chunked. Works at C speed:
    ``dict.fromkeys`` keeps the first occurrence of each name in order.
    """
    both: list[str] = [""] * (2 * len(lhs))
    both[0::2] = lhs
    both[1::2] = rhs
    new = [name for name in dict.fromkeys(both) if name not in index]
    index.update(zip(new, range(len(index), len(index) + len(new))))


def _parse_int_ids(tokens: list[str], path: Path, chunk: EdgeChunk) -> np.ndarray:
    try:
        ids = np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        for i, tok in enumerate(tokens):
            try:
                int(tok)
            except ValueError:
                raise InputFormatError(
                    f"{path}:{chunk.line_of(i)}: node id {tok!r} is not an integer "
                    "(drop --ids int to use string ids)"
                ) from None
        raise InputFormatError(f"{path}:{chunk.first_line}: integer node id out of range in this chunk") from None
    if ids.size and ids.min() < 0:
        bad = int(np.flatnonzero(ids < 0)[0])
        raise InputFormatError(
            f"{path}:{chunk.line_of(bad)}: negative node id {tokens[bad]!r} (--ids int needs ids >= 0)"
        )
    return ids


def plan_import(spec: ImportSpec, progress: Progress | None = None) -> PartitionPlan:
    """Pass 1: read every source once, build the dictionaries and assign partitions.

    ``progress`` is called with the number of bytes of the sources read since its last
    call (as stored, so gzipped bytes for a gzip file): the edge count is not known yet.
    """
    if spec.num_partitions < 1:
        raise InputFormatError(f"--partitions must be >= 1, got {spec.num_partitions}")
    if spec.ids not in ("string", "int"):
        raise InputFormatError(f"--ids must be 'string' or 'int', got {spec.ids!r}")
    node_index: dict[str, int] = {}
    relation_index: dict[str, int] = {}
    max_id = -1
    edges_per_split: dict[str, int] = {}
    for source in spec.sources:
        count = 0
        offset = 0
        for chunk in read_chunks(source.path, spec.columns, spec.delimiter, spec.chunk_size):
            if spec.ids == "int":
                for tokens in (chunk.lhs, chunk.rhs):
                    ids = _parse_int_ids(tokens, source.path, chunk)
                    max_id = max(max_id, int(ids.max()))
            else:
                add_first_seen(node_index, chunk.lhs, chunk.rhs)
            if chunk.rel is not None:
                for name in set(chunk.rel):
                    relation_index.setdefault(name, len(relation_index))
            count += len(chunk.lhs)
            if progress:
                progress(chunk.end_offset - offset)
            offset = chunk.end_offset
        if count == 0:
            raise InputFormatError(f"{source.path}: no edges (the file is empty or only comments)")
        edges_per_split[source.split] = edges_per_split.get(source.split, 0) + count
    if spec.columns.rel is None:
        relation_index = {DEFAULT_RELATION: 0}
    else:
        # Relation indices in sorted-name order, so they do not depend on file order.
        relation_index = {name: i for i, name in enumerate(sorted(relation_index))}
    num = max_id + 1 if spec.ids == "int" else len(node_index)
    P = spec.num_partitions
    if spec.ids == "int":
        rank = np.arange(num, dtype=np.int64)
    else:
        rank = np.random.default_rng(spec.seed).permutation(num).astype(np.int64)
    partition_of = (rank % P).astype(np.int32)
    offset_of = rank // P
    counts = [len(range(p, num, P)) for p in range(P)]
    return PartitionPlan(
        spec=spec,
        node_index=node_index if spec.ids == "string" else None,
        relation_index=relation_index,
        partition_of=partition_of,
        offset_of=offset_of,
        entity_counts=counts,
        edges_per_split=edges_per_split,
    )


def source_record(source: Source) -> dict[str, object]:
    return {"split": source.split, "path": os.path.abspath(source.path), "bytes": source.path.stat().st_size}
