"""Pass 1 of an import: dictionaries, partition assignment, sizes (no writing).

With ``ids="int"`` the plan holds arrays of (largest id + 1) rows, so one huge id
is refused in one line before they are allocated (:func:`check_dense_rows`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from bigembed.config import Config
from bigembed.errors import ConfigError, InputFormatError
from bigembed.partitioner.reader import DEFAULT_COLUMNS, ColumnSpec, EdgeChunk, SkippedLines, read_chunks
from bigembed.scheduler.memory import available_memory

DEFAULT_RELATION = "edge"
# Bytes plan_import holds at its peak per row of an int-id plan (measured with tracemalloc): the arange (8),
# rank % P as int32 (4), rank // P (8), the offsets (8), then partition_of (4) and offset_of (8) as copies.
DENSE_ROW_BYTES = 40


@dataclass(frozen=True)
class Source:
    split: str
    path: Path


@dataclass(frozen=True)
class Schema:
    """Entity types of the two sides of each relation, from a config (``[relations.NAME]
    lhs/rhs``, ``[entities.NAME]``). ``types_of(name)`` is None for a relation the schema
    does not cover; ``source`` names the config in errors."""

    relations: dict[str, tuple[str, str]]
    types: tuple[str, ...]
    default: tuple[str, str] | None = None  # for unlisted relations (one declared type)
    source: str = "the config"

    def types_of(self, relation: str) -> tuple[str, str] | None:
        return self.relations.get(relation, self.default)

    @classmethod
    def from_config(cls, config: Config, source: str) -> Schema | None:
        """The schema a config declares, or None when it declares no entity types."""
        if not config.typed:
            return None
        relations: dict[str, tuple[str, str]] = {}
        for name, rc in config.relations.items():
            types = config.relation_types(name)
            if types is None and (rc.lhs or rc.rhs):
                missing = "rhs" if rc.lhs else "lhs"
                raise ConfigError(f"{source}: relations.{name}.{missing} is not set "
                                  "(with several entity types a relation needs both lhs and rhs)")
            if types is not None:
                relations[name] = types
        named = set(config.entities) | {t for pair in relations.values() for t in pair}
        only = next(iter(config.entities)) if len(config.entities) == 1 else None
        return cls(relations, tuple(sorted(named)), (only, only) if only else None, source)


@dataclass(frozen=True)
class ImportSpec:
    """What to import and how. ``ids`` is ``"string"`` (dictionary) or ``"int"`` (dense ids).

    Without a ``schema`` every node is of the one type ``entity``; with one, a
    node's type is given by the relation it appears in, and the same id under
    two types is two nodes.
    """

    sources: list[Source]
    num_partitions: int = 1
    columns: ColumnSpec = field(default_factory=lambda: ColumnSpec.parse(DEFAULT_COLUMNS))
    delimiter: str = "\t"
    ids: str = "string"
    seed: int = 0
    entity: str = "node"
    chunk_size: int = 500_000
    schema: Schema | None = None
    memory: int | None = None  # choose num_partitions for this training memory budget (bytes)...
    memory_dim: int = 100  # ...at this embedding dimension
    memory_dtype: str = "float32"  # ...stored at this precision (training.storage_dtype)
    header: bool | None = None  # line 1 of each file: True skip, False an edge, None refuse it if header-like
    comment: str = "#"  # lines starting with this are skipped ("": no comment lines)
    plan_memory: int | None = None  # bytes pass 1 may allocate for int ids (None: the memory available now)

    @property
    def type_names(self) -> list[str]:
        return list(self.schema.types) if self.schema else [self.entity]


@dataclass
class PartitionPlan:
    """Everything pass 2 needs: node -> (partition, offset), relation names and types, sizes.

    Nodes of all types are numbered globally: type ``t``'s nodes are
    ``type_starts[t] + i`` with ``i`` the node's index in the type's dictionary
    (``node_index[t]``, string ids) or the id itself (int ids).
    ``partition_of``/``offset_of`` are indexed by that global number; an offset
    counts from the partition's first row, where type 0's rows come first, then
    type 1's, and so on (``type_counts[t][p]`` rows of type ``t`` in partition ``p``).
    """

    spec: ImportSpec
    node_index: list[dict[str, int]] | None
    relation_index: dict[str, int]
    relation_types: list[tuple[int, int]]
    type_names: list[str]
    type_starts: np.ndarray
    partition_of: np.ndarray
    offset_of: np.ndarray
    type_counts: list[list[int]]
    edges_per_split: dict[str, int]
    skipped: SkippedLines = field(default_factory=SkippedLines)

    @property
    def num_entities(self) -> int:
        return int(self.partition_of.shape[0])

    @property
    def entity_counts(self) -> list[int]:
        """Rows per partition, all types together."""
        return [sum(c[p] for c in self.type_counts) for p in range(self.spec.num_partitions)]

    def members_by_partition(self, t: int = 0) -> list[np.ndarray]:
        """For each partition, type ``t``'s node indices (within the type) in offset order."""
        lo, hi = int(self.type_starts[t]), int(self.type_starts[t + 1])
        part, off = self.partition_of[lo:hi], self.offset_of[lo:hi]
        order = np.lexsort((off, part))
        bounds = np.cumsum([0, *self.type_counts[t]])
        return [order[bounds[p] : bounds[p + 1]] for p in range(self.spec.num_partitions)]

    def summary(self) -> str:
        sizes = ", ".join(str(c) for c in self.entity_counts)
        splits = ", ".join(f"{s}={n}" for s, n in self.edges_per_split.items())
        types = ""
        if len(self.type_names) > 1:
            totals = [int(self.type_starts[t + 1] - self.type_starts[t]) for t in range(len(self.type_names))]
            types = " of types " + ", ".join(f"{n}={c}" for n, c in zip(self.type_names, totals))
        skipped = self.skipped.describe()
        return (
            f"{self.num_entities} nodes ({self.spec.ids} ids){types} in {self.spec.num_partitions} "
            f"partitions [{sizes}], {len(self.relation_index)} relations, edges: {splits}"
            + (f"; {skipped}" if skipped else "")
        )


Progress = Callable[[int], None]


def add_first_seen(index: dict[str, int], lhs: list[str], rhs: list[str]) -> None:
    """Give unseen names the next ids, in first-appearance order (lhs then rhs, line by line).

    The order does not depend on how the file is chunked. Works at C speed:
    ``dict.fromkeys`` keeps the first occurrence of each name in order.
    """
    add_names(index, interleave(lhs, rhs))


def interleave(lhs: list, rhs: list) -> list:
    both: list = [None] * (2 * len(lhs))
    both[0::2] = lhs
    both[1::2] = rhs
    return both


def add_names(index: dict[str, int], names: list[str]) -> None:
    new = [name for name in dict.fromkeys(names) if name not in index]
    index.update(zip(new, range(len(index), len(index) + len(new))))


def read_source(spec: ImportSpec, path: Path, skipped: SkippedLines | None = None) -> Iterator[EdgeChunk]:
    """The chunks of one source file, read as ``spec`` says (both passes read through here)."""
    return read_chunks(path, spec.columns, spec.delimiter, spec.chunk_size, header=spec.header,
                       comment=spec.comment, skipped=skipped)


def _parse_int_ids(tokens: list[str], path: Path, chunk: EdgeChunk) -> np.ndarray:
    try:
        ids = np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        for i, tok in enumerate(tokens):
            try:
                value = int(tok)
            except ValueError:
                raise InputFormatError(
                    f"{path}:{chunk.line_of(i)}: node id {tok!r} is not an integer "
                    "(drop --ids int to use string ids)"
                ) from None
            if not 0 <= value < 2**63:
                what = "is negative" if value < 0 else "is too large"
                raise InputFormatError(
                    f"{path}:{chunk.line_of(i)}: node id {tok!r} {what} for --ids int "
                    "(use --ids string, or renumber the ids to 0..N-1)"
                ) from None
        raise InputFormatError(f"{path}:{chunk.first_line}: integer node id out of range in this chunk") from None
    if ids.size and ids.min() < 0:
        bad = int(np.flatnonzero(ids < 0)[0])
        raise InputFormatError(
            f"{path}:{chunk.line_of(bad)}: negative node id {tokens[bad]!r} (--ids int needs ids >= 0)"
        )
    return ids


def check_dense_rows(rows: int, largest: tuple[int, Path, int], limit: int | None) -> None:
    """Refuse an int-id plan of ``rows`` rows whose arrays would not fit in ``limit`` bytes.

    ``largest`` is (the largest id, its file, its line), named in the error.
    """
    need = rows * DENSE_ROW_BYTES
    if limit is None or need <= limit:
        return
    from bigembed.scheduler.memory import human

    value, path, line = largest
    raise InputFormatError(
        f"{path}:{line}: node id {value} makes --ids int plan {rows:,} rows (every id from 0 up), which needs "
        f"{human(need)} but {human(limit)} is available; use --ids string, or renumber the ids to 0..N-1"
    )


def chunk_types(spec: ImportSpec, chunk: EdgeChunk, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(lhs type, rhs type) index of each edge of a chunk, from its relation and the schema.

    A relation the schema does not cover is an error naming its first line.
    """
    n = len(chunk.lhs)
    schema = spec.schema
    if schema is None:
        return np.zeros(n, np.int64), np.zeros(n, np.int64)
    index = {name: i for i, name in enumerate(schema.types)}
    rels = chunk.rel if chunk.rel is not None else [DEFAULT_RELATION] * n
    by_relation: dict[str, tuple[int, int]] = {}
    for name in dict.fromkeys(rels):
        types = schema.types_of(name)
        if types is None:
            line = chunk.line_of(rels.index(name))
            raise InputFormatError(
                f"{path}:{line}: relation {name!r} has no entity types in {schema.source} "
                f"(add [relations.{name}] with lhs and rhs)"
            )
        by_relation[name] = (index[types[0]], index[types[1]])
    pairs = np.array([by_relation[name] for name in rels], dtype=np.int64).reshape(n, 2)
    return pairs[:, 0], pairs[:, 1]


def plan_import(spec: ImportSpec, progress: Progress | None = None) -> PartitionPlan:
    """Pass 1: read every source once, build the dictionaries and assign partitions.

    ``progress`` is called with the number of bytes of the sources read since its last
    call (as stored, so gzipped bytes for a gzip file): the edge count is not known yet.
    """
    if spec.num_partitions < 1:
        raise InputFormatError(f"--partitions must be >= 1, got {spec.num_partitions}")
    if spec.ids not in ("string", "int"):
        raise InputFormatError(f"--ids must be 'string' or 'int', got {spec.ids!r}")
    T = len(spec.type_names)
    node_index: list[dict[str, int]] = [{} for _ in range(T)]
    relation_index: dict[str, int] = {}
    max_id = [-1] * T
    largest: tuple[int, Path, int] = (-1, Path(), 0)  # (id, file, line) of the largest int id
    limit = (spec.plan_memory if spec.plan_memory is not None else available_memory()) if spec.ids == "int" else None
    edges_per_split: dict[str, int] = {}
    skipped = SkippedLines()
    for source in spec.sources:
        count = 0
        offset = 0
        for chunk in read_source(spec, source.path, skipped):
            lt, rt = chunk_types(spec, chunk, source.path)
            if spec.ids == "int":
                for tokens, types in ((chunk.lhs, lt), (chunk.rhs, rt)):
                    ids = _parse_int_ids(tokens, source.path, chunk)
                    for t in range(T):
                        sel = ids[types == t] if T > 1 else ids
                        if sel.size:
                            max_id[t] = max(max_id[t], int(sel.max()))
                    top = int(ids.argmax())
                    if ids[top] > largest[0]:
                        largest = (int(ids[top]), source.path, chunk.line_of(top))
                check_dense_rows(sum(m + 1 for m in max_id), largest, limit)
            elif T == 1:
                add_first_seen(node_index[0], chunk.lhs, chunk.rhs)
            else:
                both, both_types = interleave(chunk.lhs, chunk.rhs), interleave(lt.tolist(), rt.tolist())
                for t in sorted(set(both_types)):
                    add_names(node_index[t], [n for n, x in zip(both, both_types) if x == t])
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
    type_of = {name: i for i, name in enumerate(spec.type_names)}
    relation_types = []
    for name in relation_index:
        pair = spec.schema.types_of(name) if spec.schema else (spec.entity, spec.entity)
        assert pair is not None  # chunk_types checked every relation
        relation_types.append((type_of[pair[0]], type_of[pair[1]]))
    sizes = [max_id[t] + 1 if spec.ids == "int" else len(node_index[t]) for t in range(T)]
    if spec.memory is not None:
        spec = replace(spec, num_partitions=_partitions_for_budget(spec, sum(sizes),
                                                                    edges_per_split.get("train", 0)))
    P = spec.num_partitions
    parts, locals_, type_counts = [], [], []
    for t, num in enumerate(sizes):
        if spec.ids == "int":
            rank = np.arange(num, dtype=np.int64)
        else:  # type 0 keeps the permutation a one-type import has always used
            rng = np.random.default_rng(spec.seed if t == 0 else [spec.seed, t])
            rank = rng.permutation(num).astype(np.int64)
        parts.append((rank % P).astype(np.int32))
        locals_.append(rank // P)
        type_counts.append([len(range(p, num, P)) for p in range(P)])
    base = np.zeros(P, np.int64)
    offsets = []
    for t in range(T):
        offsets.append(locals_[t] + base[parts[t]])
        base += np.asarray(type_counts[t], np.int64)
    return PartitionPlan(
        spec=spec,
        node_index=node_index if spec.ids == "string" else None,
        relation_index=relation_index,
        relation_types=relation_types,
        type_names=spec.type_names,
        type_starts=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        partition_of=np.concatenate(parts) if parts else np.zeros(0, np.int32),
        offset_of=np.concatenate(offsets) if offsets else np.zeros(0, np.int64),
        type_counts=type_counts,
        edges_per_split=edges_per_split,
        skipped=skipped,
    )


def _partitions_for_budget(spec: ImportSpec, num_nodes: int, num_edges: int) -> int:
    from bigembed.config import TrainingConfig
    from bigembed.scheduler.memory import MemoryModel, human, partitions_for, resolve_workers
    from bigembed.storage.dtypes import itemsize

    assert spec.memory is not None
    model = MemoryModel(spec.memory_dim, itemsize=itemsize(spec.memory_dtype),
                        workers=resolve_workers(TrainingConfig()))  # training's default worker count
    P = partitions_for(model, num_nodes, spec.memory, num_edges)
    if P is None:
        raise InputFormatError(f"--memory {human(spec.memory)}: too small for {num_nodes} nodes at dim "
                               f"{spec.memory_dim} even with 4096 partitions")
    return P


def source_record(source: Source) -> dict[str, object]:
    return {"split": source.split, "path": os.path.abspath(source.path), "bytes": source.path.stat().st_size}
