"""Working with a trained RUN from Python: names, vectors, scores, predictions, neighbours.

    import bigembed
    with bigembed.open_run("RUN") as run:
        run.neighbors("n42", k=5)               # [Match(name, score, type), ...]
        run.predict_tails("n42", "r0", k=10)    # tails of (n42, r0, ?), known ones left out
        run.score([("n42", "r0", "n7")])        # the model's score of each triple

Everything streams over partitions: a query reads one partition's rows at a time, scores them
in slices and keeps a running top-k, so a table larger than memory is queried in bounded
memory. Partitions are kept in memory between queries while they fit ``memory`` (half of
what is available by default), so a table that fits is read from disk once.

Names are looked up without loading the table: integer ids are computed (``id % P`` is the
partition), and string ids go through a name index, a Parquet file of (name, partition,
offset) sorted by name, which is built once by DuckDB (within ``memory``, spilling to disk)
beside the DATA's node names and read back for each lookup by its row groups' ranges.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch

from bigembed.checkpoint import read_embeddings
from bigembed.errors import BigembedError
from bigembed.evaluation.ranking import load_checkpoint_model, partition_offsets
from bigembed.evaluation.scoring import Direction, direction
from bigembed.storage.data_manifest import DataManifest
from bigembed.storage.edges import Bucket, read_edges
from bigembed.storage.names import iter_names, names_dir

SCORE_ELEMENTS = 1 << 24  # bound on one (queries x candidates) block of scores
INDEX_FORMAT = 1


@dataclass(frozen=True)
class Match:
    """One answer of a query: the node's name, the model's score and the node's entity type."""

    name: str
    score: float
    type: str


@dataclass(frozen=True)
class _Node:
    type: int
    partition: int
    row: int  # row within the partition (all entity types' rows, in type order)


class Run:
    """A committed version of a RUN, opened for queries (see :func:`open_run`).

    The version is pinned while the object is open, so a trainer running beside it cannot
    delete it; close it (or use ``with``) when done.
    """

    def __init__(self, run: str | os.PathLike[str], data: str | os.PathLike[str] | None = None,
                 version: str = "last", memory: int | str | None = None) -> None:
        from bigembed.evaluation.report import opened_checkpoint
        from bigembed.scheduler.memory import available_memory, parse_bytes

        self.path = Path(run)
        self._stack = ExitStack()
        self.manifest, self.data, self.config = self._stack.enter_context(
            opened_checkpoint(self.path, None if data is None else Path(data), version))
        try:
            self.model, self.relation_state = load_checkpoint_model(self.path, self.manifest, self.data, self.config)
        except BaseException:
            self._stack.close()
            raise
        if memory is None:
            free = available_memory()
            self.memory = (free // 2) if free else 1 << 30
        else:
            self.memory = parse_bytes(memory) if isinstance(memory, str) else int(memory)
        self._offsets = partition_offsets(self.data)
        self._cache: dict[int, np.ndarray] = {}
        self._cached_bytes = 0
        self._names_open: dict[tuple[int, int], Any] = {}
        self._faiss: dict[tuple[str, int], Any] = {}
        self.partition_reads = 0  # partitions read from disk so far (tests and benchmarks look)

    # -- what the run holds ---------------------------------------------------------------
    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def dim(self) -> int:
        return self.config.model.dim

    @property
    def entity_types(self) -> list[str]:
        return self.data.type_names

    @property
    def relations(self) -> list[str]:
        return list(self.data.relations)

    def num_nodes(self, entity_type: str | None = None) -> int:
        """Nodes of ``entity_type`` (all types when None)."""
        if entity_type is None:
            return self.data.num_entities
        return self.data.entity_types[self._type_index(entity_type)].total

    def close(self) -> None:
        self._cache.clear()
        self._names_open.clear()
        self._faiss.clear()
        self._stack.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Run({str(self.path)!r}, v{self.version}, {self.data.num_entities} nodes, "
                f"{len(self.relations)} relations, dim {self.dim})")

    # -- names and vectors, streamed ------------------------------------------------------
    def names(self, entity_type: str | None = None) -> Iterator[str]:
        """Names of ``entity_type`` (the only type when None) in the order of
        :meth:`partitions` and :meth:`embeddings_array`: partition by partition."""
        from bigembed.export.writers import partition_names

        t = self._type_index(entity_type)
        for p in range(self.data.num_partitions):
            for chunk in partition_names(self.data, p, t):
                yield from chunk

    def partitions(self, entity_type: str | None = None) -> Iterator[tuple[list[str], np.ndarray]]:
        """(names, float32 rows) of ``entity_type`` one partition at a time: the vectors the
        model scores with (``model.global_emb`` added)."""
        from bigembed.export.writers import partition_names

        t = self._type_index(entity_type)
        for p in range(self.data.num_partitions):
            start, stop = self.data.type_ranges(p)[t]
            names = [n for chunk in partition_names(self.data, p, t) for n in chunk]
            yield names, self._partition(p)[start:stop]

    def embeddings_array(self, entity_type: str | None = None, folder: str | os.PathLike[str] | None = None
                         ) -> np.ndarray:
        """All of ``entity_type``'s vectors as a read-only memory-mapped (N, dim) float32 array,
        rows in :meth:`names` order. Written once, as ``bigembed export --format npy`` does, into
        ``folder`` (default ``RUN/exports/v<N>-npy``) and mapped from there afterwards."""
        from bigembed.export import export_run

        t = self._type_index(entity_type)
        out = Path(folder) if folder is not None else self.path / "exports" / f"v{self.version}-npy"
        suffix = f"_{self.data.entity_types[t].name}" if self.data.typed else ""
        matrix = out / f"embeddings{suffix}.npy"
        if not matrix.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            export_run(self.path, self.manifest, self.data, out, "npy", self.dim, False, None, None)
        return np.load(matrix, mmap_mode="r")

    def vector(self, name: str, entity_type: str | None = None) -> np.ndarray:
        """The (dim,) float32 vector of node ``name``."""
        return self.vectors([name], entity_type)[0]

    def vectors(self, names: Sequence[str], entity_type: str | None = None) -> np.ndarray:
        """(len(names), dim) float32 vectors of the named nodes."""
        nodes = self._locate(list(names), entity_type)
        return self._rows(nodes)

    # -- the model's scores ----------------------------------------------------------------
    def score(self, triples: Sequence[tuple[str, str | int, str]]) -> np.ndarray:
        """The model's score of each (head, relation, tail) triple, as training and evaluation
        score an edge (higher is more likely)."""
        out = np.empty(len(triples), np.float32)
        by_relation: dict[int, list[int]] = {}
        for i, (_h, r, _t) in enumerate(triples):
            by_relation.setdefault(self._relation_index(r), []).append(i)
        for r, idx in by_relation.items():
            lt, rt = self.data.relation_types[r]
            H = torch.from_numpy(self._rows(self._locate([str(triples[i][0]) for i in idx], type_index=lt)))
            T = torch.from_numpy(self._rows(self._locate([str(triples[i][2]) for i in idx], type_index=rt)))
            with torch.no_grad():
                d = direction(self.model, self.relation_state, r, H, T, False, self.config.model.reciprocal)
            out[idx] = d.true_scores.float().numpy()
        return out

    @overload
    def predict_tails(self, head: str, relation: str | int, k: int = ...,  # type: ignore[overload-overlap]
                      filtered: bool = ...) -> list[Match]: ...
    @overload
    def predict_tails(self, head: Sequence[str], relation: str | int, k: int = ...,
                      filtered: bool = ...) -> list[list[Match]]: ...

    def predict_tails(self, head: str | Sequence[str], relation: str | int, k: int = 10,
                      filtered: bool = True) -> list[Match] | list[list[Match]]:
        """The ``k`` best tails of (``head``, ``relation``, ?) among the relation's tail type, best
        first. ``filtered``: leave out tails the DATA already has for the pair (any split), as
        the filtered evaluation protocol does. A list of heads gives a list of answers."""
        return self._predict(head, relation, k, filtered, predict_lhs=False)

    @overload
    def predict_heads(self, relation: str | int, tail: str, k: int = ...,  # type: ignore[overload-overlap]
                      filtered: bool = ...) -> list[Match]: ...
    @overload
    def predict_heads(self, relation: str | int, tail: Sequence[str], k: int = ...,
                      filtered: bool = ...) -> list[list[Match]]: ...

    def predict_heads(self, relation: str | int, tail: str | Sequence[str], k: int = 10,
                      filtered: bool = True) -> list[Match] | list[list[Match]]:
        """The ``k`` best heads of (?, ``relation``, ``tail``), best first (see :meth:`predict_tails`)."""
        return self._predict(tail, relation, k, filtered, predict_lhs=True)

    @overload
    def neighbors(self, name: str, k: int = ...,  # type: ignore[overload-overlap]
                  entity_type: str | None = ..., index: str | os.PathLike[str] | None = ...,
                  search: str | None = ...) -> list[Match]: ...
    @overload
    def neighbors(self, name: Sequence[str], k: int = ..., entity_type: str | None = ...,
                  index: str | os.PathLike[str] | None = ..., search: str | None = ...) -> list[list[Match]]: ...

    def neighbors(self, name: str | Sequence[str], k: int = 10, entity_type: str | None = None,
                  index: str | os.PathLike[str] | None = None, search: str | None = None
                  ) -> list[Match] | list[list[Match]]:
        """The ``k`` nodes of the same entity type nearest to ``name`` by the model's comparator
        (dot, cos, l2 or squared_l2 on the vectors; no relation applied), the node itself left
        out, best first. A list of names gives a list of answers. ``index``: a folder written
        by ``bigembed export --format faiss`` from this version, searched instead of the table;
        ``search``: FAISS search parameters for it, e.g. ``"nprobe=32"`` for an IVF index (how
        many of its lists a query visits: more is slower and nearer to exact)."""
        one = isinstance(name, str)
        names = [name] if isinstance(name, str) else list(name)
        _check_k(k)
        nodes = self._locate(names, entity_type)
        results: list[list[Match]] = [[] for _ in names]
        for t in sorted({n.type for n in nodes}):
            idx = [i for i, n in enumerate(nodes) if n.type == t]
            rows = self._rows([nodes[i] for i in idx])
            selves = [self._global(nodes[i]) for i in idx]
            if index is not None:
                answers = self._faiss_top_k(Path(index), t, rows, k, selves, search)
            else:
                Q = torch.from_numpy(rows)
                answers = self._top_k(Direction(Q, _same, Q[:, :1]), t, k, [np.array([g]) for g in selves])
            for i, answer in zip(idx, answers, strict=True):
                results[i] = answer
        return results[0] if one else results

    def _faiss_top_k(self, folder: Path, t: int, rows: np.ndarray, k: int, selves: list[int],
                     search: str | None) -> list[list[Match]]:
        from bigembed.export.faiss_index import import_faiss, prepare, read_faiss_meta, to_scores

        faiss = import_faiss()
        meta = read_faiss_meta(folder)
        etype = self.data.entity_types[t]
        comparator = self.config.model.comparator
        info = meta.get("types", {}).get(etype.name)
        if meta.get("version") != self.version or meta.get("comparator") != comparator or not info \
                or info.get("rows") != etype.total:
            raise BigembedError(f"{folder}: a FAISS index of v{meta.get('version')} ({meta.get('comparator')}), "
                                f"not of this run's v{self.version} ({comparator}) and its {etype.total} "
                                f"{etype.name} rows; export it again")
        key = (str(folder.resolve()), t)
        if key not in self._faiss:
            try:
                self._faiss[key] = faiss.read_index(str(folder / info["index"]))
            except RuntimeError as exc:
                raise BigembedError(f"{folder / info['index']}: FAISS cannot read it ({_first_line(exc)}); "
                                    "export it again") from None
        if search:
            try:
                faiss.ParameterSpace().set_index_parameters(self._faiss[key], search)
            except RuntimeError as exc:
                raise BigembedError(f"--search {search!r}: FAISS refuses it for {folder / info['index']} "
                                    f"({str(exc).strip().splitlines()[-1].rsplit(':', 1)[-1].strip()})") from None
        distances, found = self._faiss[key].search(prepare(rows, comparator), k + 1)
        scores = to_scores(distances, comparator)
        # FAISS rows are the type's rows partition by partition: row -> (partition, offset)
        starts = np.concatenate([[0], np.cumsum(etype.counts)])
        out = []
        for q, self_id in enumerate(selves):
            matches = []
            for row, score in zip(found[q].tolist(), scores[q].tolist(), strict=True):
                if row < 0:  # fewer rows than asked for
                    continue
                p = int(np.searchsorted(starts, row, "right") - 1)
                g = int(self._offsets[p]) + self.data.type_ranges(p)[t][0] + row - int(starts[p])
                if g != self_id:
                    matches.append(Match(self._name_of(g), float(score), etype.name))
            out.append(matches[:k])
        return out

    # -- internals -------------------------------------------------------------------------
    def _predict(self, anchor: str | Sequence[str], relation: str | int, k: int, filtered: bool,
                 predict_lhs: bool) -> list[Match] | list[list[Match]]:
        one = isinstance(anchor, str)
        names = [anchor] if isinstance(anchor, str) else list(anchor)
        _check_k(k)
        r = self._relation_index(relation)
        lt, rt = self.data.relation_types[r]
        anchor_type, answer_type = (rt, lt) if predict_lhs else (lt, rt)
        nodes = self._locate(names, type_index=anchor_type)
        rows = torch.from_numpy(self._rows(nodes))
        with torch.no_grad():
            if predict_lhs:
                d = direction(self.model, self.relation_state, r, torch.zeros_like(rows), rows, True,
                              self.config.model.reciprocal)
            else:
                d = direction(self.model, self.relation_state, r, rows, torch.zeros_like(rows), False,
                              self.config.model.reciprocal)
        exclude = self._known_answers(nodes, r, predict_lhs) if filtered else [np.empty(0, np.int64)] * len(nodes)
        answers = self._top_k(d, answer_type, k, exclude)
        return answers[0] if one else answers

    def _top_k(self, d: Direction, t: int, k: int, exclude: list[np.ndarray]) -> list[list[Match]]:
        """The best ``k`` rows of entity type ``t`` for each of ``d``'s queries, streaming over
        partitions with a running top-k; ``exclude[i]``: global ids query i may not answer."""
        n = d.queries.shape[0]
        best_scores = torch.full((n, 0), -math.inf)
        best_ids = torch.zeros((n, 0), dtype=torch.int64)
        step = max(1, SCORE_ELEMENTS // max(1, n))
        for p in range(self.data.num_partitions):
            start, stop = self.data.type_ranges(p)[t]
            if stop == start:
                continue
            emb = self._partition(p)
            base = int(self._offsets[p])
            for lo in range(start, stop, step):
                hi = min(stop, lo + step)
                with torch.no_grad():
                    scores = d.scores(self.model, torch.from_numpy(emb[lo:hi])).float()
                scores = torch.nan_to_num(scores, nan=-math.inf)
                for i, banned in enumerate(exclude):
                    hit = banned[(banned >= base + lo) & (banned < base + hi)] - (base + lo)
                    if len(hit):
                        scores[i, torch.from_numpy(hit)] = -math.inf
                block_ids = torch.arange(base + lo, base + hi, dtype=torch.int64).expand(n, -1)
                all_scores = torch.cat([best_scores, scores], dim=1)
                all_ids = torch.cat([best_ids, block_ids], dim=1)
                keep = min(k, all_scores.shape[1])
                best_scores, where = torch.topk(all_scores, keep, dim=1)
                best_ids = torch.gather(all_ids, 1, where)
            del emb  # let this partition go before the next is read
        type_name = self.data.entity_types[t].name
        out: list[list[Match]] = []
        for i in range(n):
            row = [(int(g), float(s)) for g, s in zip(best_ids[i].tolist(), best_scores[i].tolist(), strict=True)
                   if s != -math.inf]
            out.append([Match(self._name_of(g), s, type_name) for g, s in row])
        return out

    def _partition(self, p: int) -> np.ndarray:
        """Partition ``p``'s float32 rows (all types), kept while the cache fits ``memory``."""
        if p in self._cache:
            return self._cache[p]
        rows = read_embeddings(self.path, self.manifest, self.data, p)
        self.partition_reads += 1
        if self._cached_bytes + rows.nbytes <= self.memory // 2:  # the other half for the query's blocks
            self._cache[p] = rows
            self._cached_bytes += rows.nbytes
        return rows

    def _rows(self, nodes: list[_Node]) -> np.ndarray:
        out = np.empty((len(nodes), self.dim), np.float32)
        for p in sorted({n.partition for n in nodes}):
            emb = self._partition(p)
            for i, n in enumerate(nodes):
                if n.partition == p:
                    out[i] = emb[n.row]
        return out

    def _global(self, node: _Node) -> int:
        return int(self._offsets[node.partition]) + node.row

    def _name_of(self, global_id: int) -> str:
        p = int(np.searchsorted(self._offsets, global_id, "right") - 1)
        row = global_id - int(self._offsets[p])
        for t, (start, stop) in enumerate(self.data.type_ranges(p)):
            if start <= row < stop:
                offset = row - start
                if self.data.id_kind == "int":
                    return str(offset * self.data.num_partitions + p)
                key = (t, p)
                if key not in self._names_open:
                    from mmap_ninja.string import StringsMmap

                    self._names_open[key] = StringsMmap(
                        names_dir(self.data.path.parent, self.data.entity_types[t].name, p), mode="rb")
                return str(self._names_open[key][offset])
        raise BigembedError(f"node {global_id}: past the table's {self.data.num_entities} rows")

    def _known_answers(self, nodes: list[_Node], r: int, predict_lhs: bool) -> list[np.ndarray]:
        """Global ids of the answers the DATA has (any split) for each query: every bucket the
        queries' partitions touch is read once for all of them."""
        P = self.data.num_partitions
        found: list[list[np.ndarray]] = [[] for _ in nodes]
        for anchor_p in sorted({n.partition for n in nodes}):
            queries = [i for i, n in enumerate(nodes) if n.partition == anchor_p]
            rows = np.array([nodes[i].row for i in queries])
            for split in self.data.splits():
                for other in range(P):
                    bucket = Bucket(other, anchor_p) if predict_lhs else Bucket(anchor_p, other)
                    count = self.data.edge_count(split, bucket)
                    if not count:
                        continue
                    e = read_edges(self.data.path.parent, split, bucket, count, dtypes=self.data.edge_dtypes)
                    anchor, answer = (e.rhs, e.lhs) if predict_lhs else (e.lhs, e.rhs)
                    anchor = np.asarray(anchor)
                    hit = (np.asarray(e.rel) == r) & np.isin(anchor, rows)
                    hit_anchor = anchor[hit]
                    hit_answer = np.asarray(answer)[hit].astype(np.int64) + self._offsets[other]
                    for i, row in zip(queries, rows, strict=True):
                        found[i].append(hit_answer[hit_anchor == row])
        return [np.unique(np.concatenate(f)) if f else np.empty(0, np.int64) for f in found]

    def _type_index(self, entity_type: str | None) -> int:
        names = self.data.type_names
        if entity_type is None:
            if len(names) > 1:
                raise BigembedError(f"{self.data.path.parent}: several entity types ({', '.join(names)}); "
                                    "name one")
            return 0
        if entity_type not in names:
            raise BigembedError(f"entity type {entity_type!r}: not in this DATA (it has: {', '.join(names)})")
        return names.index(entity_type)

    def _relation_index(self, relation: str | int) -> int:
        names = self.data.relations
        if isinstance(relation, int) and not isinstance(relation, bool):
            if not 0 <= relation < len(names):
                raise BigembedError(f"relation {relation}: this DATA has relations 0..{len(names) - 1}")
            return relation
        if relation in names:
            return names.index(str(relation))
        import difflib

        close = difflib.get_close_matches(str(relation), names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        raise BigembedError(f"relation {relation!r}: not in this DATA (it has: {shown}){hint}")

    def _locate(self, names: list[str], entity_type: str | None = None, type_index: int | None = None
                ) -> list[_Node]:
        """Where each named node lives; one-line errors for unknown or ambiguous names."""
        if type_index is not None:
            types = [type_index]
        elif entity_type is not None:
            types = [self._type_index(entity_type)]
        else:
            types = list(range(len(self.data.entity_types)))
        found: dict[str, list[_Node]] = {}
        for t in types:
            for name, (p, offset) in self._lookup(names, t).items():
                found.setdefault(name, []).append(_Node(t, p, self.data.type_ranges(p)[t][0] + offset))
        out = []
        for name in names:
            hits = found.get(name, [])
            where = (f" of type {self.data.entity_types[types[0]].name!r}" if len(types) == 1 and self.data.typed
                     else "")
            if not hits:
                raise BigembedError(f"node {name!r}: not in {self.data.path.parent}{where}")
            if len(hits) > 1:
                kinds = ", ".join(self.data.entity_types[h.type].name for h in hits)
                raise BigembedError(f"node {name!r}: a node of several entity types ({kinds}); name one")
            out.append(hits[0])
        return out

    def _lookup(self, names: list[str], t: int) -> dict[str, tuple[int, int]]:
        """name -> (partition, offset within the type's rows) for the names of type ``t`` found."""
        etype = self.data.entity_types[t]
        P = self.data.num_partitions
        if self.data.id_kind == "int":
            out = {}
            for name in names:
                try:
                    i = int(name)
                except ValueError:
                    continue
                if i >= 0 and str(i) == name and i // P < etype.counts[i % P]:
                    out[name] = (i % P, i // P)
            return out
        import duckdb

        for attempt in range(2):
            index = self._name_index(t)
            con = duckdb.connect()
            try:
                rows = con.execute(f"SELECT name, partition, \"offset\" FROM read_parquet('{_sql_path(index)}') "
                                   "WHERE name IN (SELECT unnest(?))", [list(set(names))]).fetchall()
                break
            except duckdb.Error as exc:  # a damaged index (it is derived data): build it again, once
                if attempt:
                    raise BigembedError(f"{index}: the name index cannot be read ({_first_line(exc)})") from None
                index.unlink(missing_ok=True)
            finally:
                con.close()
        return {name: (int(p), int(o)) for name, p, o in rows}

    def _name_index(self, t: int) -> Path:
        """The sorted Parquet index of type ``t``'s names (built on first use)."""
        etype = self.data.entity_types[t]
        fingerprint = (self.data.fingerprint or {}).get("nodes", "")
        folder = self.data.path.parent / "index"
        path = folder / f"names_{etype.name}.v{INDEX_FORMAT}.{str(fingerprint)[:12] or 'nofp'}.parquet"
        if path.exists():
            return path
        try:
            folder.mkdir(exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".probe", delete=True)
            probe.close()
        except OSError:  # a read-only DATA: keep the index in the user's cache instead
            from bigembed.cbuild import cache_dir

            folder = cache_dir() / "name-index" / (str(fingerprint)[:16] or self.data.path.parent.name)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / path.name
            if path.exists():
                return path
        try:
            build_name_index(self.data, t, path, self.memory)
        except OSError as exc:
            raise BigembedError(f"{path}: cannot write the name index ({exc.strerror or exc}); nothing was kept") \
                from None
        except Exception as exc:
            import duckdb

            if isinstance(exc, duckdb.Error):
                raise BigembedError(f"{path}: cannot build the name index ({_first_line(exc)}); nothing was kept") \
                    from None
            raise
        return path


def build_name_index(data: DataManifest, t: int, path: Path, memory: int) -> None:
    """Write type ``t``'s (name, partition, offset) sorted by name to ``path`` (atomically):
    names streamed from the DATA into an unsorted Parquet file, sorted by DuckDB within
    ``memory`` (it spills to disk beside the output)."""
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    etype = data.entity_types[t]
    schema = pa.schema([("name", pa.string()), ("partition", pa.int32()), ("offset", pa.int64())])
    raw = path.with_name(f".{path.name}.{os.getpid()}.raw")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    spill = path.with_name(f".{path.name}.{os.getpid()}.spill")
    try:
        with pq.ParquetWriter(raw, schema) as writer:
            for p in range(data.num_partitions):
                start = 0
                for chunk in iter_names(names_dir(data.path.parent, etype.name, p), etype.counts[p]):
                    writer.write_table(pa.table({
                        "name": pa.array(chunk, pa.string()),
                        "partition": pa.array(np.full(len(chunk), p, np.int32)),
                        "offset": pa.array(np.arange(start, start + len(chunk), dtype=np.int64)),
                    }, schema=schema))
                    start += len(chunk)
        con = duckdb.connect()
        try:
            con.execute(f"SET memory_limit='{max(memory // 2, 64 << 20) >> 20}MB'")
            con.execute(f"SET temp_directory='{_sql_path(spill)}'")
            con.execute(f"COPY (SELECT * FROM read_parquet('{_sql_path(raw)}') ORDER BY name) TO "
                        f"'{_sql_path(tmp)}' (FORMAT parquet, ROW_GROUP_SIZE 65536)")
        finally:
            con.close()
        os.replace(tmp, path)
    finally:
        import shutil

        for leftover in (raw, tmp):
            leftover.unlink(missing_ok=True)
        shutil.rmtree(spill, ignore_errors=True)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise BigembedError(f"k = {k!r}: expected a positive whole number of answers")


def open_run(run: str | os.PathLike[str], data: str | os.PathLike[str] | None = None, version: str = "last",
             memory: int | str | None = None) -> Run:
    """Open version ``version`` (``last``, ``best`` or ``vN``) of a RUN for queries.

    ``data``: the DATA directory, if it moved since training (default: the one RUN was trained
    on). ``memory``: bytes (or a size such as ``"8G"``) the partitions kept between queries and
    a query's score blocks may use; half of what is available by default.
    """
    return Run(run, data, version, memory)
