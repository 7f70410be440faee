"""One-pass import: Arrow reads the files once; a dictionary in memory, or DuckDB out of core.

Every block of edges (:mod:`bigembed.partitioner.blocks`) is checked, then:

- string ids, in memory (the usual case): each name is looked up in the C dictionary of
  :mod:`bigembed.partitioner.dictionary` (ids in first-seen order) and the block's edges go
  to a spool file as those ids. Past :data:`DICTIONARY_SHARE` of the budget, or where no C
  compiler is found, the dictionary and the edges move to (or start in) DuckDB instead: a
  table of each split's edges by name, held within a memory limit and spilling what does not
  fit to a folder inside the import's temporary output, so memory stays bounded whatever the
  number of distinct nodes.
- int ids: node ``i`` is rank ``i``, without a dictionary; edges are spooled, or written to
  their buckets at once when the partition count is given.

Then nodes: the distinct (entity type, name) pairs, each type's nodes ranked by a seeded hash
of the name (:data:`NODE_ORDER`, computed by DuckDB on either path, so both give the same
layout byte for byte) with the name itself as tie-break. A node's partition is ``rank % P``
and its offset ``rank // P`` after the rows of earlier types: partitions differ by at most one
node per type. Names are told apart by their bytes, never by their hash, so two ids that hash
alike stay two nodes. Each split's edges, mapped to their ranks (through the spool's ids, or
joined to the nodes by name in DuckDB), come back in input order and are appended to their
(lhs partition, rhs partition) bucket in the compact layout
(:func:`bigembed.storage.edges.compact_dtypes`).

Everything is written under a temporary folder beside DATA and renamed into place only when
complete, so a failed or interrupted import leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bigembed.errors import BigembedError, InputFormatError
from bigembed.partitioner import dictionary
from bigembed.partitioner.blocks import describe, is_parquet, is_stdin, read_blocks
from bigembed.partitioner.dictionary import NameDictionary
from bigembed.partitioner.plan import (
    DEFAULT_RELATION,
    ImportSpec,
    Progress,
    _parse_int_ids,
    _partitions_for_budget,
    check_dense_rows,
)
from bigembed.partitioner.reader import EdgeChunk, SkippedLines
from bigembed.partitioner.writer import parse_weights
from bigembed.progress import plural
from bigembed.scheduler.memory import available_memory, human
from bigembed.storage.atomic import atomic_output_dir, atomic_write_json
from bigembed.storage.data_manifest import DATA_FORMAT
from bigembed.storage.edges import (
    MAX_INT32_ROWS,
    Bucket,
    EdgeArrays,
    append_column,
    append_edges,
    bucket_dir,
    compact_dtypes,
)
from bigembed.storage.names import names_dir, write_names_arrow

# The SQL that orders a type's nodes before they are dealt to partitions ({seed}: --seed).
# Tests replace it with a constant to make every id hash alike.
NODE_ORDER = "hash(n, {seed}::UBIGINT)"
COMPACT_FORMAT_VERSION = 3  # manifests with "edge_dtypes"
DEFAULT_IMPORT_FRACTION = 0.5  # of the memory available now, when no --memory is given
DATABASE = "import.duckdb"
# An in-memory DuckDB table of string-id edges takes about this many bytes per byte of their
# text (9.4M edges, 169 MB of TSV: 36 bytes an edge as two inlined strings and a code, and
# DuckDB's overheads); more than ``memory_limit`` spills uncompressed.
IN_MEMORY_BYTES_PER_TEXT_BYTE = 5
# Int ids with the partition count given (one entity type) are bucketed while reading, with no
# spool; tests turn this off to compare with the spool's path.
DIRECT_WRITES = True
MIN_WRITE_BUFFER = 16 << 20  # bytes of bucketed edges held between appends, at least
MIN_WINDOW_ROWS = 1 << 20  # string ids: edges put back in input order at a time, at least
# String ids go through the in-memory C dictionary when it can be built; tests turn it off to
# compare with DuckDB's path, which it must equal byte for byte.
NAME_DICTIONARY = True
DICTIONARY_SHARE = 0.4  # of the budget: past it, the dictionary moves to DuckDB, which spills


@dataclass
class ImportStats:
    """What an import did, for its summary line and for tests."""

    num_nodes: int = 0
    type_counts: list[list[int]] = field(default_factory=list)
    num_partitions: int = 1
    relations: list[str] = field(default_factory=list)
    edges_per_split: dict[str, int] = field(default_factory=dict)
    skipped: SkippedLines = field(default_factory=SkippedLines)
    spilled_bytes: int = 0  # the most DuckDB had written to its spill folder at a check
    on_disk: bool = False  # the edges were kept in a database file, not in memory
    dictionary: str = ""  # string ids: "memory" (the C dictionary), "duckdb", or "moved" (memory, then DuckDB)
    memory_limit: int = 0

    def summary(self, ids: str, type_names: list[str]) -> str:
        sizes = [sum(c[p] for c in self.type_counts) for p in range(self.num_partitions)]
        shown = ", ".join(map(str, sizes[:16])) + (", ..." if len(sizes) > 16 else "")
        splits = ", ".join(f"{s}={n}" for s, n in self.edges_per_split.items())
        types = ""
        if len(type_names) > 1:
            types = " of types " + ", ".join(f"{n}={sum(c)}" for n, c in zip(type_names, self.type_counts))
        skipped = self.skipped.describe()
        return (f"{plural(self.num_nodes, 'node')} ({ids} ids){types} in {plural(self.num_partitions, 'partition')} "
                f"[{shown}], {plural(len(self.relations), 'relation')}, edges: {splits}"
                + (f"; {skipped}" if skipped else ""))


def import_budget(spec: ImportSpec) -> int:
    """Bytes this import may use: --memory when given, else half of the memory available now."""
    if spec.memory is not None:
        return spec.memory
    available = available_memory()
    return int((available if available is not None else 8 << 30) * DEFAULT_IMPORT_FRACTION)


def _connect(spill: Path, limit: int, on_disk: bool) -> Any:
    """DuckDB within ``limit`` bytes, spilling to ``spill``; ``on_disk``: its tables live in a
    database file there (compressed: about 9 bytes an edge of short string ids, against about 85
    once an in-memory table spills), for inputs too big to hold."""
    import duckdb

    con = duckdb.connect(str(spill / DATABASE) if on_disk else ":memory:")
    con.execute(f"SET memory_limit='{max(limit, 16 << 20) >> 20}MB'").fetchall()
    con.execute(f"SET temp_directory='{spill}'").fetchall()
    con.execute(f"SET threads={max(1, os.cpu_count() or 1)}").fetchall()
    con.execute("SET preserve_insertion_order=true").fetchall()
    return con


def keep_on_disk(spec: ImportSpec, limit: int) -> bool:
    """Whether string-id edges go to a database file rather than memory: when a source's size is
    unknown before it is read (standard input), compressed (gzip, xz, bzip2, Parquet), or
    the text is big enough that its table (about IN_MEMORY_BYTES_PER_TEXT_BYTE times the text)
    would not fit ``limit``."""
    if spec.ids != "string":
        return False
    total = 0
    for source in spec.sources:
        if is_stdin(source.path) or is_parquet(source.path):
            return True
        try:
            with open(source.path, "rb") as handle:
                magic = handle.read(6)
        except OSError:
            continue  # the reader names the file
        if magic.startswith((b"\x1f\x8b", b"\xfd7zXZ", b"BZh")):
            return True
        total += source.path.stat().st_size
    return total * IN_MEMORY_BYTES_PER_TEXT_BYTE > limit


def _spilled(con: Any, spill: Path) -> int:
    """Bytes DuckDB holds on disk now: its spill files and its database file."""
    if con is None:
        return 0
    database = spill / DATABASE
    held = database.stat().st_size if database.exists() else 0
    try:
        return held + int(con.execute("SELECT coalesce(sum(size), 0) FROM duckdb_temporary_files()").fetchall()[0][0])
    except Exception:  # noqa: BLE001 - an older DuckDB without the table: report nothing
        return held


def _ahead(items: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """Yield ``items`` as a background thread produces them, up to ``depth`` ahead.

    Arrow's parser, NumPy's array operations, hashing and file reads and writes release the
    GIL, so the producer's work (parsing the next block, bucketing the next batch) runs on
    the other core while the consumer works on this one. An exception in the producer is
    raised in the consumer; when the consumer stops early, the producer stops after its
    current item."""
    slots: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(kind: str, value: Any) -> None:
        while not stop.is_set():
            try:
                slots.put((kind, value), timeout=0.1)
                return
            except queue.Full:
                continue

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if stop.is_set():
                    break
                put("item", item)
            put("end", None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            put("error", exc)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="bigembed-import-ahead", daemon=True)
    worker.start()
    finished = False
    try:
        while True:
            kind, value = slots.get()
            if kind == "end":
                finished = True
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        # Stopped early (an error, Ctrl-C): give the producer a moment to finish its item, but
        # do not wait on it for good: it may be blocked reading a pipe that stalls (a daemon
        # thread, it ends with the process).
        worker.join(timeout=None if finished else 2.0)


def _narrowest(values: np.ndarray, top: int) -> np.ndarray:
    """Non-negative ``values`` (at most ``top``) in the smallest unsigned type that holds them."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return values.astype(dtype)
    return values


class _Spool:
    """One split's int-id edges in input order, on disk until the partition count is known.

    Each chunk is stored as its columns end to end, as the loader gives them: ids and relation
    codes in the smallest unsigned type that holds that chunk's values (usually 4 + 4 + 1 bytes
    an edge, not 20). The list of chunks and their dtypes stays in memory. Read back with plain
    reads, not a memory map, whose pages would stay resident until it closes (20 GB for a
    billion edges)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: Any = open(path, "wb")
        self.index: list[tuple[int, list[tuple[str, np.dtype]]]] = []

    def add(self, columns: dict[str, np.ndarray]) -> None:
        kinds = []
        for name, values in columns.items():
            values = np.ascontiguousarray(values)
            self.handle.write(values.data.cast("B"))
            kinds.append((name, values.dtype))
        self.index.append((len(columns["l"]), kinds))

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def chunks(self) -> Any:
        with open(self.path, "rb") as handle:
            for count, kinds in self.index:
                yield {name: np.fromfile(handle, dtype=dtype, count=count) for name, dtype in kinds}


class _Loader:
    """Pass over the input: checks each chunk and appends it to its split's table."""

    def __init__(self, spec: ImportSpec, con: Any, spool: Path,
                 direct: Callable[[str], _DirectWriter] | None = None, names: NameDictionary | None = None,
                 connect: Callable[[], Any] | None = None, names_limit: int = 0,
                 log: Callable[[str], None] | None = None) -> None:
        self.spec, self.con = spec, con
        self.names = names  # string ids kept in memory: edges spooled as dictionary ids
        self.connect, self.names_limit, self.log = connect, names_limit, log
        self.moved = False  # the dictionary outgrew names_limit and moved to DuckDB
        self.direct = direct  # int ids, P given, one entity type: buckets written while reading
        self.writers: dict[str, _DirectWriter] = {}
        self.types = list(spec.type_names)
        self.codes: dict[str, int] = {}  # relation name -> first-seen code
        self.code_types: list[tuple[int, int]] = []
        self.max_id = [-1] * len(self.types)
        self.largest: tuple[int, Path, int] = (-1, Path(), 0)
        self.tables: dict[str, str] = {}  # split -> its DuckDB table (string ids) or spool folder (int ids)
        self.spool_root = spool
        self.spools: dict[str, _Spool] = {}
        self.spooled: dict[str, int] = {}  # edges of each split so far
        self.weighted = spec.columns.weight is not None
        self.int_limit: int | None = None
        if spec.ids == "int":
            self.int_limit = spec.plan_memory if spec.plan_memory is not None else available_memory()

    def _spool_add(self, split: str, columns: dict[str, np.ndarray]) -> None:
        """Int ids need no dictionary: a chunk's columns go to a flat spool, read back once P is known."""
        if split not in self.spools:
            folder = self.spool_root / f"split_{len(self.spools)}"
            folder.mkdir(parents=True)
            self.spools[split] = _Spool(folder / "edges.bin")
            self.tables[split] = str(folder)
        self.spools[split].add(columns)
        self.spooled[split] = self.spooled.get(split, 0) + len(columns["l"])

    def close_spools(self) -> None:
        for spool in self.spools.values():
            spool.close()

    def spool_batches(self, split: str) -> Any:
        """(lhs id, rhs id, relation code, weight or None) of a split's spooled edges, in input order."""
        for batch in self.spools[split].chunks():
            yield batch["l"], batch["h"], batch["c"], batch.get("w")

    def _table(self, split: str) -> str:
        if split not in self.tables:
            name = f"split_{len(self.tables)}"
            node = "BIGINT" if self.spec.ids == "int" else "VARCHAR"
            weight = ", w FLOAT" if self.weighted else ""
            self.con.execute(f"CREATE TABLE {name} (l {node}, h {node}, c INTEGER{weight})").fetchall()
            self.tables[split] = name
        return self.tables[split]

    def _relation_codes(self, chunk: EdgeChunk, path: Path) -> np.ndarray:
        n = len(chunk.lhs)
        if chunk.rel is None:
            names, indices = [DEFAULT_RELATION], np.zeros(n, np.int64)
        elif isinstance(chunk.rel, pa.DictionaryArray):  # as Arrow's CSV reader gives it
            names = chunk.rel.dictionary.to_pylist()
            indices = chunk.rel.indices.to_numpy(zero_copy_only=False)
        else:
            encoded = pc.dictionary_encode(chunk.rel).combine_chunks() if isinstance(chunk.rel, pa.ChunkedArray) \
                else pc.dictionary_encode(chunk.rel)
            names = encoded.dictionary.to_pylist()
            indices = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        lookup = np.empty(len(names), np.int32)
        for k, name in enumerate(names):
            if name not in self.codes:
                schema = self.spec.schema
                if schema is not None:
                    pair = schema.types_of(name)
                    if pair is None:
                        line = chunk.line_of(int(np.flatnonzero(indices == k)[0]))
                        raise InputFormatError(
                            f"{describe(path)}:{line}: relation {name!r} has no entity types in {schema.source} "
                            f"(add [relations.{name}] with lhs and rhs)")
                    self.code_types.append((self.types.index(pair[0]), self.types.index(pair[1])))
                else:
                    self.code_types.append((0, 0))
                self.codes[name] = len(self.codes)
            lookup[k] = self.codes[name]
        if np.array_equal(lookup, np.arange(len(lookup))):
            return indices  # the block's dictionary is in first-seen order already (usual)
        return lookup[indices]

    def _int_ids(self, array: pa.Array, chunk: EdgeChunk, path: Path) -> tuple[np.ndarray, int]:
        """The ids of one column as int64 and their largest value; a one-line error naming the
        line of a token that is not a non-negative integer."""
        try:
            ids = array if array.type == pa.int64() else pc.cast(array, pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            _parse_int_ids(array.to_pylist(), path, chunk)  # raises with the line
            raise InputFormatError(f"{describe(path)}:{chunk.first_line}: bad integer node id") from None
        values = ids.to_numpy(zero_copy_only=False)
        if not values.size:
            return values, -1
        low, high = pc.min_max(ids).values()
        if low.as_py() < 0:
            bad = int(np.flatnonzero(values < 0)[0])
            raise InputFormatError(f"{describe(path)}:{chunk.line_of(bad)}: negative node id "
                                   f"{str(array[bad].as_py())!r} (--ids int needs ids >= 0)")
        return values, int(high.as_py())

    def _weights(self, chunk: EdgeChunk, path: Path) -> pa.Array:
        assert chunk.weight is not None
        try:
            values = pc.cast(chunk.weight, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values = None
        if values is not None and np.isfinite(values).all() and (values >= 0).all():
            return pa.array(values.astype(np.float32))
        parse_weights(replace(chunk, weight=cast(pa.Array, chunk.weight).to_pylist()), path)  # raises with the line
        raise AssertionError("unreachable: some weight was bad")  # pragma: no cover

    def add(self, split: str, chunk: EdgeChunk, path: Path) -> None:
        codes = self._relation_codes(chunk, path)
        lhs, rhs = chunk.lhs, chunk.rhs
        if self.spec.ids == "int":
            ctypes = np.asarray(self.code_types, np.int64).reshape(-1, 2)
            spooled: dict[str, np.ndarray] = {}
            chunk_top = -1
            for side, name, array in ((0, "l", lhs), (1, "h", rhs)):
                values, top = self._int_ids(array, chunk, path)
                chunk_top = max(chunk_top, top)
                if len(self.types) == 1:
                    self.max_id[0] = max(self.max_id[0], top)
                else:
                    types = ctypes[codes, side]
                    for t in range(len(self.types)):
                        sel = values[types == t]
                        if sel.size:
                            self.max_id[t] = max(self.max_id[t], int(sel.max()))
                if top > self.largest[0]:
                    self.largest = (top, path, chunk.line_of(int(values.argmax())))
                spooled[name] = _narrowest(values, top)
            check_dense_rows(sum(m + 1 for m in self.max_id), self.largest, self.int_limit)
            spooled["c"] = _narrowest(codes, len(self.codes) - 1)
            if self.weighted:
                spooled["w"] = self._weights(chunk, path).to_numpy()
            if self.direct is None:
                self._spool_add(split, spooled)
                return
            P = self.spec.num_partitions
            if chunk_top // P > MAX_INT32_ROWS - 1:
                row = int(np.flatnonzero((spooled["l"] == chunk_top) | (spooled["h"] == chunk_top))[0])
                raise InputFormatError(
                    f"{describe(path)}:{chunk.line_of(row)}: node id {chunk_top} would be row {chunk_top // P} of "
                    f"its partition, more than {MAX_INT32_ROWS} rows; import with more partitions (-p)")
            if split not in self.writers:
                self.writers[split] = self.direct(split)
                self.tables[split] = "direct"
            self.writers[split].add(spooled["l"], spooled["h"], spooled["c"], len(self.codes), spooled.get("w"))
            self.spooled[split] = self.spooled.get(split, 0) + len(codes)
            return
        if self.names is not None:
            sides = {}
            typed = np.asarray(self.code_types, np.int32).reshape(-1, 2) if len(self.types) > 1 else None
            try:
                for side, name, array in ((0, "l", lhs), (1, "h", rhs)):
                    sides[name] = self.names.intern(array, None if typed is None else typed[codes, side])
            except MemoryError:  # the machine had less memory than the budget promised
                self._move_to_duckdb()
            else:
                top = len(self.names) - 1
                spooled = {name: _narrowest(ids, top) for name, ids in sides.items()}
                spooled["c"] = _narrowest(codes, len(self.codes) - 1)
                if self.weighted:
                    spooled["w"] = self._weights(chunk, path).to_numpy()
                self._spool_add(split, spooled)
                if self.names.memory(adding=2 * len(codes)) > self.names_limit:  # room for a block like this
                    self._move_to_duckdb()
                return
        columns: dict[str, Any] = {"l": lhs, "h": rhs, "c": pa.array(codes, pa.int32())}
        if self.weighted:
            columns["w"] = self._weights(chunk, path)
        self._insert(split, columns)
        self.spooled[split] = self.spooled.get(split, 0) + len(codes)

    def _insert(self, split: str, columns: dict[str, Any]) -> None:
        self.con.register("block", pa.table(columns))
        self.con.execute(f"INSERT INTO {self._table(split)} SELECT * FROM block").fetchall()
        self.con.unregister("block")

    def _move_to_duckdb(self) -> None:
        """The dictionary would outgrow its share of the budget: put the edges spooled so far
        into DuckDB's tables by name, in input order, and go on there (DuckDB spills to disk)."""
        assert self.names is not None and self.connect is not None
        if self.log:
            self.log(f"the node dictionary reached {len(self.names)} nodes, more than its share of the memory "
                     "budget holds: moving it to DuckDB, which spills to disk")
        names, _types = self.names.export()
        self.names.close()
        self.names = None
        self.moved = True
        self.con = self.connect()
        self.close_spools()
        spools, folders = self.spools, self.tables
        self.spools, self.tables = {}, {}
        for split, spool in spools.items():
            for batch in spool.chunks():
                columns: dict[str, Any] = {"l": names.take(pa.array(batch["l"])), "h": names.take(pa.array(batch["h"])),
                                           "c": pa.array(batch["c"].astype(np.int32))}
                if "w" in batch:
                    columns["w"] = pa.array(batch["w"])
                self._insert(split, columns)
            shutil.rmtree(folders[split], ignore_errors=True)


def _counts(num: int, P: int) -> list[int]:
    return [len(range(p, num, P)) for p in range(P)]


def _node_table(con: Any, loader: _Loader, seed: int) -> list[int]:
    """Build ``nodes(t, n, rank)`` from every split; returns the node count of each type."""
    typed = len(loader.types) > 1
    if typed:
        pairs = pa.table({"c": pa.array(range(len(loader.code_types)), pa.int32()),
                          "lt": pa.array([a for a, _ in loader.code_types], pa.int32()),
                          "rt": pa.array([b for _, b in loader.code_types], pa.int32())})
        con.register("pairs", pairs)
        con.execute("CREATE TABLE code_types AS SELECT * FROM pairs").fetchall()
        sides = " UNION ALL ".join(
            f"SELECT y.lt AS t, e.l AS n FROM {table} e JOIN code_types y USING (c) "
            f"UNION ALL SELECT y.rt, e.h FROM {table} e JOIN code_types y USING (c)"
            for table in loader.tables.values())
    else:
        sides = " UNION ALL ".join(f"SELECT 0 AS t, l AS n FROM {table} UNION ALL SELECT 0, h FROM {table}"
                                   for table in loader.tables.values())
    order = NODE_ORDER.format(seed=int(seed) % 2**64)
    con.execute(f"CREATE TABLE nodes AS SELECT t, n, (row_number() OVER (PARTITION BY t ORDER BY {order}, n) - 1) "
                f"AS rank FROM (SELECT DISTINCT t, n FROM ({sides}))").fetchall()
    counts = dict(con.execute("SELECT t, count(*) FROM nodes GROUP BY t").fetchall())
    return [int(counts.get(t, 0)) for t in range(len(loader.types))]


@dataclass
class _Ranked:
    """The in-memory dictionary's nodes ranked as :func:`_node_table` ranks them."""

    names: pa.LargeStringArray  # by dictionary id
    sizes: list[int]  # nodes of each type
    rank_of: np.ndarray  # dictionary id -> rank within its type
    orders: list[np.ndarray]  # per type: dictionary ids in rank order


def _rank_names(names: NameDictionary, T: int, seed: int, limit: int, spill: Path) -> _Ranked:
    """Rank each type's distinct names by the seeded hash :data:`NODE_ORDER` (computed by DuckDB,
    so that the layout equals DuckDB's path), ties broken by the name's bytes; frees ``names``."""
    array, types = names.export()
    names.close()
    count = len(array)
    con = _connect(spill, limit, on_disk=False)
    try:
        con.register("d", pa.table({"i": pa.array(np.arange(count, dtype=np.int64)), "n": array}))
        order = NODE_ORDER.format(seed=int(seed) % 2**64)
        keys = np.empty(count, np.uint64)
        for batch in con.sql(f"SELECT i, CAST({order} AS UBIGINT) FROM d").to_arrow_reader(1 << 20):
            keys[batch.column(0).to_numpy()] = batch.column(1).to_numpy()
    finally:
        con.close()
    rank_of = np.empty(count, np.uint32 if count < 2**32 else np.int64)  # uint32: half the cache misses
    orders, sizes = [], []
    for t in range(T):
        ids = np.flatnonzero(types == t) if T > 1 else np.arange(count)
        k = keys[ids]
        o = np.argsort(k, kind="stable")
        ordered = ids[o]
        tied = np.flatnonzero(k[o][1:] == k[o][:-1])
        if tied.size:  # names whose keys are equal: put each run in byte order of the names
            starts = tied[np.r_[True, np.diff(tied) > 1]]
            ends = tied[np.r_[np.diff(tied) > 1, True]] + 2
            for a, b in zip(starts.tolist(), ends.tolist()):
                run = ordered[a:b]
                text = array.take(pa.array(run)).to_pylist()
                ordered[a:b] = run[sorted(range(len(run)), key=lambda j: text[j].encode())]
        rank_of[ordered] = np.arange(len(ordered), dtype=rank_of.dtype)
        orders.append(ordered)
        sizes.append(len(ordered))
    return _Ranked(array, sizes, rank_of, orders)


def _narrow(values: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    """``values`` as ``dtype``, refusing any that would not fit (never wrapping)."""
    dtype = np.dtype(dtype)
    if dtype != values.dtype and values.size and int(values.max()) > np.iinfo(dtype).max:
        raise InputFormatError(f"{what} offset {int(values.max())} does not fit {dtype.name}")
    return values.astype(dtype, copy=False)


def _datasync(paths: list[Path]) -> None:
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # replaced since (a renumbered relation column): the final fsync covers it
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)


class _Writeback:
    """Starts the disk writes of bucket files while the import goes on: a thread fdatasyncs
    each file after an append, so the disk works while the next blocks are parsed and the
    fsync of the finished output finds little left to write (on a 47M-edge import it took
    0.9 s of 10). A write error is raised by :meth:`wait`."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="bigembed-writeback")
        self.jobs: list[Future[None]] = []

    def sync(self, paths: list[Path]) -> None:
        self.jobs = [job for job in self.jobs if not job.done() or job.exception() is not None]
        self.jobs.append(self.pool.submit(_datasync, paths))

    def wait(self) -> None:
        for job in self.jobs:
            job.result()
        self.jobs = []

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _BucketWriter:
    """Edges of one split by bucket, buffered in memory up to ``buffer_bytes`` between appends."""

    def __init__(self, root: Path, split: str, P: int, dtypes: dict[str, np.dtype], weighted: bool,
                 buffer_bytes: int, writeback: _Writeback | None = None) -> None:
        self.root, self.split, self.P, self.dtypes = root, split, P, dtypes
        self.writeback = writeback
        self.weighted = weighted
        self.buffer_bytes = buffer_bytes
        self.pending: dict[int, list[tuple[np.ndarray, ...]]] = {}
        self.held = 0
        self.counts: dict[str, int] = {}

    def order(self, lp: np.ndarray, lo: np.ndarray, rp: np.ndarray, ro: np.ndarray, rel: np.ndarray,
              weight: np.ndarray | None) -> tuple[np.ndarray, list[np.ndarray]]:
        """A batch's edges sorted by bucket, stably (input order within a bucket), in the
        layout's dtypes; and the edges per bucket. Touches no state: runs on a worker thread."""
        P = self.P
        bucket = lp * P + rp
        if P * P <= 32767:  # numpy sorts 16-bit keys stably by radix: 3-4x faster here
            bucket = bucket.astype(np.int16)
        order = np.argsort(bucket, kind="stable")
        sizes = np.bincount(bucket, minlength=P * P)
        columns = [_narrow(lo, self.dtypes["lhs"], "lhs")[order], _narrow(ro, self.dtypes["rhs"], "rhs")[order],
                   rel.astype(self.dtypes["rel"], copy=False)[order]]
        if weight is not None:
            columns.append(weight[order])
        return sizes, columns

    def add(self, sizes: np.ndarray, columns: list[np.ndarray]) -> None:
        """Hold a batch that :meth:`order` sorted, writing out when the buffer is full."""
        start = 0
        for b in np.flatnonzero(sizes).tolist():
            stop = start + int(sizes[b])
            self.pending.setdefault(b, []).append(tuple(c[start:stop] for c in columns))
            start = stop
        self.held += sum(c.nbytes for c in columns)
        if self.held >= self.buffer_bytes:
            self.flush()

    def flush(self) -> None:
        for b, parts in sorted(self.pending.items()):
            bucket = Bucket(b // self.P, b % self.P)
            folder = bucket_dir(self.root, self.split, bucket)
            folder.mkdir(parents=True, exist_ok=True)
            joined = [np.concatenate(c) for c in zip(*parts)]
            append_edges(folder, EdgeArrays(joined[0], joined[1], joined[2], joined[3] if self.weighted else None),
                         self.dtypes)
            self.counts[bucket.key] = self.counts.get(bucket.key, 0) + len(joined[0])
            if self.writeback is not None:
                names = ["lhs", "rhs", "rel"] + (["weight"] if self.weighted else [])
                self.writeback.sync([folder / name / "data.ninja" for name in names])
        self.pending.clear()
        self.held = 0


def _rewrite_rel(root: Path, split: str, keys: Iterable[str], old: np.dtype,
                 change: Callable[[np.ndarray], np.ndarray]) -> None:
    """Rewrite the relation column of the buckets ``keys`` of ``split`` through ``change``."""
    for key in keys:
        column = bucket_dir(root, split, Bucket.from_key(key)) / "rel"
        values = change(np.fromfile(column / "data.ninja", dtype=old))
        shutil.rmtree(column)
        append_column(column, values)


class _DirectWriter:
    """Int ids with the partition count given (and one entity type): each chunk goes straight
    to its buckets, with no spool and no second pass.

    Node ``i`` is row ``i // P`` of partition ``i % P`` whatever the rest of the input holds, so
    only the relations are not final while reading: their codes are written in first-seen
    order, in the narrowest type that holds the codes so far (columns written earlier are
    widened when more relations appear, rarely), and renumbered in :meth:`finish` when the
    sorted order differs."""

    def __init__(self, root: Path, split: str, P: int, weighted: bool, buffer_bytes: int,
                 writeback: _Writeback | None = None) -> None:
        self.root, self.split, self.P = root, split, P
        dtypes: dict[str, np.dtype] = {"lhs": np.dtype(np.int32), "rhs": np.dtype(np.int32), "rel": np.dtype(np.uint8)}
        self.writer = _BucketWriter(root, split, P, dtypes, weighted, buffer_bytes, writeback)
        self.digest = _EdgeDigest()

    def add(self, lhs: np.ndarray, rhs: np.ndarray, codes: np.ndarray, num_codes: int,
            weight: np.ndarray | None) -> None:
        """Bucket one chunk of node ids (each below ``2**31 * P``: the loader checks) and relation codes."""
        rel_dtype = compact_dtypes(0, num_codes)["rel"]
        if rel_dtype != self.writer.dtypes["rel"]:
            self.writer.flush()
            _rewrite_rel(self.root, self.split, self.writer.counts, self.writer.dtypes["rel"],
                         lambda values: values.astype(rel_dtype))
            self.writer.dtypes = dict(self.writer.dtypes, rel=rel_dtype)
        self.digest.update(lhs, rhs, codes, weight)
        lo, lp = np.divmod(lhs, self.P)
        ro, rp = np.divmod(rhs, self.P)
        self.writer.add(*self.writer.order(lp, lo, rp, ro, codes, weight))

    def finish(self, relation_of_code: np.ndarray) -> dict[str, int]:
        """Write out what is held and renumber the relations; returns edges per bucket."""
        self.writer.flush()
        if not np.array_equal(relation_of_code, np.arange(len(relation_of_code))):
            dtype = self.writer.dtypes["rel"]
            _rewrite_rel(self.root, self.split, self.writer.counts, dtype,
                         lambda values: relation_of_code[values].astype(dtype))
        return self.writer.counts


class _EdgeDigest:
    """A split's fingerprint: its global node numbers (type start + rank), relation codes
    (first-seen order) and weights, each column hashed on its own in input order as int64,
    int64, int32 and float32, so that neither how the edges were batched nor the dtypes they
    were held in changes it; :meth:`hexdigest` adds the relation names of the codes."""

    def __init__(self) -> None:
        self.columns = [hashlib.sha256() for _ in range(4)]

    def update(self, lhs: np.ndarray, rhs: np.ndarray, codes: np.ndarray, weight: np.ndarray | None) -> None:
        for column, values, dtype in zip(self.columns, (lhs, rhs, codes, weight), (np.int64, np.int64, np.int32,
                                                                                    np.float32)):
            if values is not None:
                column.update(np.ascontiguousarray(values, dtype=dtype).data)

    def hexdigest(self, code_names: list[str]) -> str:
        whole = hashlib.sha256(b"".join(column.digest() for column in self.columns))
        whole.update(json.dumps(code_names).encode())
        return whole.hexdigest()


def _ranked_batches(con: Any, query: str, rows: int, window: int, weighted: bool,
                    batch_rows: int = 1 << 22) -> Iterator[tuple[Any, ...]]:
    """(lhs rank, rhs rank, relation code, weight or None) of a split's edges, in input order.

    ``query`` selects ``rowid, lhs rank, rhs rank, code[, weight]`` of the split's table (``e``)
    joined to the nodes, with no ORDER BY: DuckDB's parallel join returns rows out of order, and
    sorting them (47M edges: 13.8 s against 9.4 s for the join alone) is replaced by putting each
    row at its rowid in arrays of ``window`` rows, one window of rowids after another (one
    window and no filter when all the rows fit it)."""
    for start in range(0, rows, window):
        stop = min(rows, start + window)
        lhs, rhs = np.empty(stop - start, np.int64), np.empty(stop - start, np.int64)
        code = np.empty(stop - start, np.int32)
        weight = np.empty(stop - start, np.float32) if weighted else None
        where = "" if stop - start == rows else f" WHERE e.rowid >= {start} AND e.rowid < {stop}"
        filled = 0
        for batch in con.sql(query + where).to_arrow_reader(1 << 20):
            at = batch.column(0).to_numpy() - start
            lhs[at] = batch.column(1).to_numpy()
            rhs[at] = batch.column(2).to_numpy()
            code[at] = batch.column(3).to_numpy()
            if weight is not None:
                weight[at] = batch.column(4).to_numpy()
            filled += batch.num_rows
        if filled != stop - start:  # rowids are 0..rows-1 in a table only ever appended to
            raise BigembedError(f"import: rows {start}..{stop - 1} of a split came back as {filled} rows "
                                "(please report this)")
        for at in range(0, stop - start, batch_rows):
            part = slice(at, at + batch_rows)
            yield lhs[part], rhs[part], code[part], None if weight is None else weight[part]


def _write_edges(con: Any, loader: _Loader, root: Path, split: str, P: int, type_counts: list[list[int]],
                 dtypes: dict[str, np.dtype], relation_of_code: np.ndarray, buffer_bytes: int,
                 digest: _EdgeDigest, progress: Callable[[int], object] | None,
                 writeback: _Writeback | None = None, rank_of: np.ndarray | None = None) -> dict[str, int]:
    """Stream one split's edges in input order into its buckets; returns edges per bucket.
    ``rank_of``: the rank of each id in the split's spool (the in-memory dictionary's ids)."""
    table = loader.tables[split]
    T = len(loader.types)
    base = np.zeros((T, P), np.int64)  # rows of earlier types in each partition
    for t in range(1, T):
        base[t] = base[t - 1] + np.asarray(type_counts[t - 1], np.int64)
    ctypes = np.asarray(loader.code_types, np.int64).reshape(-1, 2)
    weight = ", e.w" if loader.weighted else ""
    on = "JOIN nodes a ON a.n = e.l JOIN nodes b ON b.n = e.h"
    if T > 1:
        on = ("JOIN code_types y ON y.c = e.c JOIN nodes a ON a.t = y.lt AND a.n = e.l "
              "JOIN nodes b ON b.t = y.rt AND b.n = e.h")
    query = f"SELECT e.rowid, a.rank, b.rank, e.c{weight} FROM {table} e {on}"
    writer = _BucketWriter(root, split, P, dtypes, loader.weighted, buffer_bytes, writeback)
    if split in loader.spools:  # int ids, or string ids through the in-memory dictionary
        batches = loader.spool_batches(split)
    else:
        rows = loader.spooled[split]
        window = max(MIN_WINDOW_ROWS, buffer_bytes // (24 if loader.weighted else 20))
        batches = _ranked_batches(con, query, rows, window, loader.weighted)

    def bucketed() -> Iterator[tuple[Any, ...]]:  # on the worker thread
        for lr, rr, code, w in batches:
            if rank_of is not None:
                lr, rr = rank_of[lr], rank_of[rr]
            rel = relation_of_code[code]
            lo, lp = np.divmod(lr, P)
            ro, rp = np.divmod(rr, P)
            if T > 1:
                lo = lo.astype(np.int64) + base[ctypes[code, 0], lp]
                ro = ro.astype(np.int64) + base[ctypes[code, 1], rp]
            yield lr, rr, code, w, *writer.order(lp, lo, rp, ro, rel, w)

    for lr, rr, code, w, sizes, columns in _ahead(bucketed()):
        digest.update(lr, rr, code, w)
        writer.add(sizes, columns)
        if progress:
            progress(len(lr))
    writer.flush()
    return writer.counts


def _digest_names(digest: Any, array: pa.Array) -> None:
    """Add each name followed by a newline to ``digest``."""
    if len(array) == 0:
        return
    lines = pc.binary_join_element_wise(array, pa.scalar("", array.type), pa.scalar("\n", array.type)
                                        ).cast(pa.large_string())
    offsets = np.frombuffer(lines.buffers()[1], np.int64)[lines.offset : lines.offset + len(lines) + 1]
    digest.update(memoryview(lines.buffers()[2])[int(offsets[0]) : int(offsets[-1])])


def _write_names(con: Any, loader: _Loader, root: Path, P: int, sizes: list[int], spec: ImportSpec,
                 ranked: _Ranked | None = None) -> str:
    """Names per (type, partition) in row order, and the node fingerprint (the same formula as
    :func:`bigembed.partitioner.writer._write_names`); from ``ranked`` when the in-memory
    dictionary held them, else from DuckDB's ``nodes``."""
    digest = hashlib.sha256(f"{spec.ids}\0{P}\0".encode())
    for t, entity in enumerate(loader.types):
        counts = _counts(sizes[t], P)
        digest.update(f"type\0{entity}\0{counts}\0".encode())
        for p in range(P):
            folder = names_dir(root, entity, p)
            folder.parent.mkdir(parents=True, exist_ok=True)
            if spec.ids == "int":
                folder.mkdir(exist_ok=True)
                continue
            digest.update(f"partition\0{p}\0{counts[p]}\0".encode())
            reader: Any
            if ranked is not None:
                rows = ranked.orders[t][p::P]
                reader = (ranked.names.take(pa.array(rows[at : at + (1 << 18)])) for at in range(0, len(rows), 1 << 18))
            else:
                reader = (batch.column(0) for batch in con.sql(
                    f"SELECT n FROM nodes WHERE t = {t} AND rank % {P} = {p} ORDER BY rank").to_arrow_reader(1 << 18))

            def hashed(arrays: Any) -> Any:
                for array in arrays:
                    _digest_names(digest, array)
                    yield array

            write_names_arrow(folder, hashed(reader))
    return digest.hexdigest()


def import_data(spec: ImportSpec, out: Path, overwrite: bool = False, progress: Progress | None = None,
                edge_progress: Callable[[int], Callable[[int], object]] | None = None,
                log: Callable[[str], None] | None = None) -> tuple[dict[str, object], ImportStats]:
    """Import ``spec``'s sources into DATA at ``out``, reading each source once.

    ``progress`` is called with bytes of input read (as stored); ``edge_progress(total)``
    returns the callback of the writing phase (edges). Returns (manifest, stats).
    """
    if spec.num_partitions < 1:
        raise InputFormatError(f"--partitions must be >= 1, got {spec.num_partitions}")
    if spec.ids not in ("string", "int"):
        raise InputFormatError(f"--ids must be 'string' or 'int', got {spec.ids!r}")
    budget = import_budget(spec)
    stats = ImportStats(memory_limit=budget)
    with atomic_output_dir(out, "import", overwrite) as tmp:
        spill = tmp / ".spill"
        spill.mkdir()
        limit = int(budget * 0.6)

        def connect() -> Any:
            stats.on_disk = keep_on_disk(spec, limit)
            return _connect(spill, limit, stats.on_disk)

        lib = dictionary.library() if spec.ids == "string" and NAME_DICTIONARY else None
        names = NameDictionary(lib) if lib is not None and len(spec.type_names) < dictionary.MAX_TYPES else None
        con = connect() if spec.ids == "string" and names is None else None  # int ids: no dictionary
        buffer_bytes = max(MIN_WRITE_BUFFER, int(budget * 0.1))
        auto_partitions = spec.memory is not None and bool(spec.memory_dim)
        writeback = _Writeback()
        direct = None
        if DIRECT_WRITES and spec.ids == "int" and not auto_partitions and len(spec.type_names) == 1:
            def direct(split: str) -> _DirectWriter:
                return _DirectWriter(tmp, split, spec.num_partitions, spec.columns.weight is not None, buffer_bytes,
                                     writeback)
        loader = _Loader(spec, con, tmp / ".spool", direct, names, connect, int(budget * DICTIONARY_SHARE), log)
        ranked = None
        try:
            for source in spec.sources:
                count = 0
                offset = 0
                for chunk in _ahead(read_blocks(source.path, spec.columns, spec.delimiter, header=spec.header,
                                                comment=spec.comment, skipped=stats.skipped,
                                                int_ids=spec.ids == "int")):
                    loader.add(source.split, chunk, source.path)
                    count += len(chunk.lhs)
                    if progress:
                        progress(chunk.end_offset - offset)
                    offset = chunk.end_offset
                if count == 0:
                    raise InputFormatError(f"{describe(source.path)}: no edges (the file is empty or only comments)")
                stats.edges_per_split[source.split] = stats.edges_per_split.get(source.split, 0) + count
            loader.close_spools()
            con = loader.con  # DuckDB's, when the dictionary moved there
            if spec.ids == "string":
                stats.dictionary = "moved" if loader.moved else "memory" if loader.names is not None else "duckdb"
            stats.spilled_bytes = _spilled(con, spill)
            if spec.ids == "int":
                sizes = [m + 1 for m in loader.max_id]
            elif loader.names is not None:
                if log:
                    log(f"ranking {len(loader.names):,} distinct nodes")
                ranked = _rank_names(loader.names, len(loader.types), spec.seed, limit, spill)
                sizes = ranked.sizes
            else:
                if log:
                    log("building the node dictionary")
                sizes = _node_table(con, loader, spec.seed)
            stats.spilled_bytes = max(stats.spilled_bytes, _spilled(con, spill))
            P = spec.num_partitions
            if auto_partitions:
                P = _partitions_for_budget(replace(spec, memory=spec.memory), sum(sizes),
                                           stats.edges_per_split.get("train", 0))
            stats.num_partitions = P
            stats.num_nodes = sum(sizes)
            stats.type_counts = [_counts(n, P) for n in sizes]
            relation_names = sorted(loader.codes) if spec.columns.rel is not None else [DEFAULT_RELATION]
            if not loader.codes:
                loader.codes = {DEFAULT_RELATION: 0}
            sorted_index = {name: i for i, name in enumerate(relation_names)}
            relation_of_code = np.empty(len(loader.codes), np.int64)
            for name, code in loader.codes.items():
                relation_of_code[code] = sorted_index[name]
            stats.relations = relation_names
            rows = max(sum(c[p] for c in stats.type_counts) for p in range(P))
            dtypes = compact_dtypes(rows, len(relation_names))
            bucket_counts: dict[str, dict[str, int]] = {}
            edge_digests: dict[str, str] = {}
            total = sum(stats.edges_per_split.values())
            edges_cb = edge_progress(total) if edge_progress else None
            code_names = sorted(loader.codes, key=loader.codes.__getitem__)
            for split in loader.tables:
                if split in loader.writers:
                    digest = loader.writers[split].digest
                    bucket_counts[split] = loader.writers[split].finish(relation_of_code)
                    if edges_cb:
                        edges_cb(loader.spooled[split])
                else:
                    digest = _EdgeDigest()
                    bucket_counts[split] = _write_edges(con, loader, tmp, split, P, stats.type_counts, dtypes,
                                                        relation_of_code, buffer_bytes, digest, edges_cb, writeback,
                                                        None if ranked is None else ranked.rank_of)
                edge_digests[split] = digest.hexdigest(code_names)
                stats.spilled_bytes = max(stats.spilled_bytes, _spilled(con, spill))
            nodes = _write_names(con, loader, tmp, P, sizes, spec, ranked)
            writeback.wait()
        except Exception as exc:
            if type(exc).__module__.split(".")[0] not in ("duckdb", "_duckdb"):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "Out of Memory" in first:
                raise BigembedError(f"{out}: the import needs more memory than the {human(budget)} it may use "
                                    f"({first}); give it more with --memory") from None
            raise BigembedError(f"{out}: import failed ({first})") from None
        finally:
            writeback.close()
            if loader.con is not None:
                loader.con.close()
            if loader.names is not None:
                loader.names.close()
            loader.close_spools()
            shutil.rmtree(spill, ignore_errors=True)
            shutil.rmtree(tmp / ".spool", ignore_errors=True)
        code_types = loader.code_types
        relation_types = [code_types[loader.codes[name]] for name in relation_names]
        manifest = {
            "fingerprint": {"nodes": nodes, "splits": edge_digests},
            "format": DATA_FORMAT,
            "format_version": COMPACT_FORMAT_VERSION,
            "edge_dtypes": {k: np.dtype(v).name for k, v in dtypes.items()},
            "entities": {entity: {"ids": spec.ids, "num_partitions": P, "counts": stats.type_counts[t]}
                         for t, entity in enumerate(loader.types)},
            "relations": [{"name": name, "lhs": loader.types[lt], "rhs": loader.types[rt]}
                          for name, (lt, rt) in zip(relation_names, relation_types)],
            "splits": {split: {"num_edges": sum(c.values()), "buckets": dict(sorted(c.items()))}
                       for split, c in bucket_counts.items()},
            "weighted": loader.weighted,
            "sources": [_source_record(s.split, s.path) for s in spec.sources],
            "seed": spec.seed,
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest, stats


def _source_record(split: str, path: Path) -> dict[str, object]:
    if is_stdin(path):
        return {"split": split, "path": "-", "bytes": None}
    return {"split": split, "path": os.path.abspath(path), "bytes": path.stat().st_size}
