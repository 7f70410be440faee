"""Pass 2 of an import: write names per partition and edges per bucket, atomically.

Everything is written under a temp folder beside DATA and renamed into place only
when complete, so a failed or interrupted import leaves no half-written DATA.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from bigembed.errors import InputFormatError
from bigembed.partitioner.plan import PartitionPlan, Progress, _parse_int_ids, chunk_types, read_source, source_record
from bigembed.partitioner.reader import EdgeChunk
from bigembed.storage.atomic import atomic_output_dir, atomic_write_json
from bigembed.storage.data_manifest import DATA_FORMAT, DATA_FORMAT_VERSION
from bigembed.storage.edges import Bucket, EdgeArrays, append_edges, bucket_dir
from bigembed.storage.names import names_dir, write_names


def _chunk_to_global(plan: PartitionPlan, chunk: EdgeChunk, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map a chunk's tokens to (lhs node, rhs node, rel index) arrays (global node numbers)."""
    if chunk.rel is None:
        rel = np.zeros(len(chunk.lhs), dtype=np.int32)
    else:
        rindex = plan.relation_index
        rel = np.fromiter(map(rindex.__getitem__, chunk.rel), dtype=np.int32, count=len(chunk.rel))
    typed = len(plan.type_names) > 1
    lt, rt = chunk_types(plan.spec, chunk, path) if typed else (None, None)
    sides = []
    for tokens, types in ((chunk.lhs, lt), (chunk.rhs, rt)):
        if plan.node_index is None:
            ids = _parse_int_ids(tokens, path, chunk)
        elif types is None:
            index = plan.node_index[0]
            ids = np.fromiter(map(index.__getitem__, tokens), dtype=np.int64, count=len(tokens))
        else:
            ids = np.empty(len(tokens), np.int64)
            for t in np.unique(types).tolist():
                sel = np.flatnonzero(types == t)
                index = plan.node_index[t]
                ids[sel] = np.fromiter((index[tokens[i]] for i in sel.tolist()), dtype=np.int64, count=len(sel))
        sides.append(ids if types is None else ids + plan.type_starts[types])
    return sides[0], sides[1], rel


def parse_weights(chunk: EdgeChunk, path: Path) -> np.ndarray | None:
    """The chunk's weights as float32 (kept as given: never rounded to integers).

    A weight that is not a finite number >= 0 is an error naming its line.
    """
    if chunk.weight is None:
        return None
    try:
        weights = np.array(chunk.weight, dtype=np.float64)
    except ValueError:
        weights = None
    if weights is not None and np.isfinite(weights).all() and (weights >= 0).all():
        return weights.astype(np.float32)
    for row, token in enumerate(chunk.weight):
        try:
            value = float(token)
        except ValueError:
            value = float("nan")
        if not (np.isfinite(value) and value >= 0):
            raise InputFormatError(
                f"{path}:{chunk.line_of(row)}: edge weight must be a finite number >= 0, got {token!r}"
            )
    raise AssertionError("unreachable: some weight was bad")  # pragma: no cover


def _append_chunk(plan: PartitionPlan, root: Path, split: str, lhs: np.ndarray, rhs: np.ndarray,
                  rel: np.ndarray, counts: dict[str, int], weight: np.ndarray | None = None) -> None:
    P = plan.spec.num_partitions
    lp = plan.partition_of[lhs].astype(np.int64)
    rp = plan.partition_of[rhs].astype(np.int64)
    bucket_id = lp * P + rp
    order = np.argsort(bucket_id, kind="stable")
    sizes = np.bincount(bucket_id, minlength=P * P)
    start = 0
    for b in np.flatnonzero(sizes):
        sel = order[start : start + sizes[b]]
        start += sizes[b]
        bucket = Bucket(int(b // P), int(b % P))
        folder = bucket_dir(root, split, bucket)
        folder.mkdir(parents=True, exist_ok=True)
        append_edges(
            folder,
            EdgeArrays(plan.offset_of[lhs[sel]], plan.offset_of[rhs[sel]], rel[sel],
                       None if weight is None else weight[sel]),
        )
        counts[bucket.key] = counts.get(bucket.key, 0) + int(sizes[b])


def _write_names(plan: PartitionPlan, root: Path) -> str:
    """Names per (entity type, partition), in row order; returns the node fingerprint: a
    sha256 of every type's names partition by partition in row order (with int ids, of the
    counts: row k of partition p is id k * P + p), so another --seed, other names or another
    number of partitions gives another fingerprint."""
    digest = hashlib.sha256(f"{plan.spec.ids}\0{plan.spec.num_partitions}\0".encode())
    for t, entity in enumerate(plan.type_names):
        digest.update(f"type\0{entity}\0{plan.type_counts[t]}\0".encode())
        if plan.node_index is None:  # int ids: row k of the type in partition p is id k * P + p
            for p in range(plan.spec.num_partitions):
                names_dir(root, entity, p).mkdir(parents=True, exist_ok=True)
            continue
        all_names = list(plan.node_index[t])
        for p, members in enumerate(plan.members_by_partition(t)):
            names = [all_names[i] for i in members.tolist()]
            digest.update(f"partition\0{p}\0{len(names)}\0".encode())
            for start in range(0, len(names), 65536):
                digest.update("\n".join(names[start : start + 65536]).encode() + b"\n")
            write_names(names_dir(root, entity, p), names)
    return digest.hexdigest()


def _hash_edges(digest: Any, lhs: np.ndarray, rhs: np.ndarray, rel: np.ndarray, weight: np.ndarray | None) -> None:
    """Add a chunk of a split's edges (global node numbers, in input order) to its fingerprint."""
    for column in (lhs, rhs, rel) if weight is None else (lhs, rhs, rel, weight):
        digest.update(np.ascontiguousarray(column).data)


def _manifest(plan: PartitionPlan, bucket_counts: dict[str, dict[str, int]],
              fingerprint: dict[str, object]) -> dict[str, object]:
    spec = plan.spec
    return {
        "fingerprint": fingerprint,
        "format": DATA_FORMAT,
        "format_version": DATA_FORMAT_VERSION,
        "entities": {
            entity: {
                "ids": spec.ids,
                "num_partitions": spec.num_partitions,
                "counts": plan.type_counts[t],
            }
            for t, entity in enumerate(plan.type_names)
        },
        "relations": [
            {"name": name, "lhs": plan.type_names[lt], "rhs": plan.type_names[rt]}
            for name, (lt, rt) in zip(sorted(plan.relation_index, key=plan.relation_index.__getitem__),
                                      plan.relation_types, strict=True)
        ],
        "splits": {
            split: {"num_edges": sum(c.values()), "buckets": dict(sorted(c.items()))}
            for split, c in bucket_counts.items()
        },
        "weighted": spec.columns.weight is not None,
        "sources": [source_record(s) for s in spec.sources],
        "seed": spec.seed,
    }


def write_plan(plan: PartitionPlan, out: Path, overwrite: bool = False,
               progress: Progress | None = None) -> dict[str, object]:
    """Pass 2: write DATA at ``out``; returns the manifest written."""
    with atomic_output_dir(out, "import", overwrite) as tmp:
        bucket_counts: dict[str, dict[str, int]] = {}
        edge_digests: dict[str, Any] = {}
        for source in plan.spec.sources:
            counts = bucket_counts.setdefault(source.split, {})
            digest = edge_digests.setdefault(source.split, hashlib.sha256())
            for chunk in read_source(plan.spec, source.path):
                lhs, rhs, rel = _chunk_to_global(plan, chunk, source.path)
                weight = parse_weights(chunk, source.path)
                _hash_edges(digest, lhs, rhs, rel, weight)
                _append_chunk(plan, tmp, source.split, lhs, rhs, rel, counts, weight)
                if progress:
                    progress(len(chunk.lhs))
        nodes = _write_names(plan, tmp)
        fingerprint: dict[str, object] = {"nodes": nodes,
                                          "splits": {split: d.hexdigest() for split, d in edge_digests.items()}}
        manifest = _manifest(plan, bucket_counts, fingerprint)
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest


