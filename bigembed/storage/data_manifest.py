"""The DATA directory's ``manifest.json``: what an import produced, read back and checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bigembed.errors import BigembedError, DataLayoutError
from bigembed.storage.atomic import read_json
from bigembed.storage.edges import ALLOWED_DTYPES, LEGACY_DTYPES, MAX_INT32_ROWS, Bucket, EdgeDtypes

DATA_FORMAT = "bigembed-data"
# What the importer writes. It stays 2 until the importer writes the compact layout: it writes
# "format_version": DATA_FORMAT_VERSION, and a version 3 manifest without "edge_dtypes" is
# refused; the commit that makes it write "edge_dtypes" sets 3 here.
DATA_FORMAT_VERSION = 2
# 1: one entity type (its layout is version 2's with one type); 2: int64 lhs/rhs and int32 rel
# columns; 3: the columns' dtypes are the manifest's "edge_dtypes" (storage.edges.compact_dtypes)
READABLE_VERSIONS = (1, 2, 3)


@dataclass(frozen=True)
class EntityType:
    """One entity type: ``counts[p]`` of its nodes live in partition ``p``."""

    name: str
    counts: list[int]

    @property
    def total(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True)
class DataManifest:
    """A parsed, validated DATA manifest.

    Every partition holds nodes of every entity type: partition ``p``'s rows are
    the nodes of the first type, then those of the second, and so on
    (:meth:`type_ranges`). ``entity_counts[p]`` is the number of rows of partition
    ``p`` (all types); ``relation_types[r]`` the (lhs, rhs) type indices of relation
    ``r``; ``bucket_counts`` maps split -> ``"l_r"`` -> edge count.
    """

    path: Path
    entity_types: list[EntityType]
    id_kind: str  # "string" or "int"
    num_partitions: int
    entity_counts: list[int]
    relations: list[str]
    relation_types: list[tuple[int, int]]
    bucket_counts: dict[str, dict[str, int]]
    raw: dict[str, Any]
    edge_dtypes: EdgeDtypes  # "lhs", "rhs", "rel" -> the dtype of that edge column's files

    @property
    def typed(self) -> bool:
        """Whether there is more than one entity type."""
        return len(self.entity_types) > 1

    @property
    def type_names(self) -> list[str]:
        return [t.name for t in self.entity_types]

    def type_ranges(self, partition: int) -> list[tuple[int, int]]:
        """``[start, stop)`` rows of each entity type within ``partition``."""
        out, start = [], 0
        for t in self.entity_types:
            out.append((start, start + t.counts[partition]))
            start += t.counts[partition]
        return out

    def describe_types(self) -> str:
        return ", ".join(f"{t.name} ({t.total})" for t in self.entity_types)

    @property
    def weighted(self) -> bool:
        """Whether the edges carry a float ``weight`` column."""
        return bool(self.raw.get("weighted", False))

    @property
    def fingerprint(self) -> dict[str, Any] | None:
        """``{"nodes": sha256, "splits": {split: sha256}}`` of the node dictionary and partitioning
        and of each split's edges, as imported; None for a DATA imported before fingerprints."""
        value = self.raw.get("fingerprint")
        return value if isinstance(value, dict) else None

    @property
    def num_entities(self) -> int:
        return sum(self.entity_counts)

    def splits(self) -> list[str]:
        return list(self.bucket_counts)

    def num_edges(self, split: str) -> int:
        return sum(self.bucket_counts[split].values())

    def edge_count(self, split: str, bucket: Bucket) -> int:
        return self.bucket_counts[split].get(bucket.key, 0)

    def require_split(self, split: str) -> None:
        if split not in self.bucket_counts:
            raise DataLayoutError(
                f"{self.path}: no split named {split!r} (this DATA has: {', '.join(self.bucket_counts)})"
            )


def _edge_dtypes(path: Path, raw: dict[str, Any], entity_counts: list[int], num_relations: int) -> EdgeDtypes:
    """The edge columns' dtypes: format 3's ``edge_dtypes``, checked; formats 1 and 2's fixed ones."""
    if raw["format_version"] < 3:
        if "edge_dtypes" in raw:
            raise DataLayoutError(f"{path}: edge_dtypes needs format_version 3, this manifest says "
                                  f"{raw['format_version']}; re-import the edges")
        return dict(LEGACY_DTYPES)
    given = raw.get("edge_dtypes")
    if not isinstance(given, dict):
        raise DataLayoutError(f"{path}: format_version 3 needs edge_dtypes (the dtype of each edge column), "
                              f"got {given!r}; re-import the edges")
    out = {}
    for column, allowed in ALLOWED_DTYPES.items():
        name = given.get(column)
        if name not in allowed:
            got = "it is missing" if column not in given else f"got {name!r}"
            raise DataLayoutError(f"{path}: edge_dtypes.{column} must be one of {', '.join(allowed)}, {got}; "
                                  "re-import the edges")
        out[column] = np.dtype(name)
    if (out["lhs"] == np.int32 or out["rhs"] == np.int32) and max(entity_counts, default=0) > MAX_INT32_ROWS:
        raise DataLayoutError(f"{path}: edge_dtypes.lhs/rhs int32 cannot hold the offsets of a partition "
                              f"of {max(entity_counts)} rows; re-import the edges")
    if num_relations - 1 > int(np.iinfo(out["rel"].name).max):
        raise DataLayoutError(f"{path}: edge_dtypes.rel {out['rel'].name} cannot hold {num_relations} "
                              "relation ids; re-import the edges")
    return out


def read_data_manifest(data_dir: Path) -> DataManifest:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataLayoutError(f"{data_dir}: no such DATA directory (create one with `bigembed import`)")
    path = data_dir / "manifest.json"
    try:
        raw = read_json(path, "DATA manifest")
    except BigembedError as exc:
        raise DataLayoutError(str(exc)) from None
    if not isinstance(raw, dict) or raw.get("format") != DATA_FORMAT:
        raise DataLayoutError(f"{path}: not a bigembed DATA manifest")
    if raw.get("format_version") not in READABLE_VERSIONS:
        raise DataLayoutError(
            f"{path}: format_version {raw.get('format_version')} is not supported "
            f"(this bigembed reads {', '.join(map(str, READABLE_VERSIONS))}); re-import the edges"
        )
    try:
        entities = raw["entities"]
        types = [EntityType(name, [int(c) for c in info["counts"]]) for name, info in entities.items()]
        first = next(iter(entities.values()))
        P = int(first["num_partitions"])
        if not types or any(len(t.counts) != P for t in types):
            raise ValueError("every entity type needs one count per partition")
        index = {t.name: i for i, t in enumerate(types)}
        id_kind = first["ids"]
        entity_counts = [sum(t.counts[p] for t in types) for p in range(P)]
        relations = [r["name"] for r in raw["relations"]]
        relation_types = [(index[r["lhs"]], index[r["rhs"]]) for r in raw["relations"]]
        bucket_counts = {s: dict(v["buckets"]) for s, v in raw["splits"].items()}
    except (KeyError, TypeError, ValueError, StopIteration) as exc:
        raise DataLayoutError(f"{path}: manifest is missing or has a malformed field ({exc!r})") from None
    return DataManifest(
        path=path,
        entity_types=types,
        id_kind=id_kind,
        num_partitions=P,
        entity_counts=entity_counts,
        relations=relations,
        relation_types=relation_types,
        bucket_counts=bucket_counts,
        raw=raw,
        edge_dtypes=_edge_dtypes(path, raw, entity_counts, len(relations)),
    )
