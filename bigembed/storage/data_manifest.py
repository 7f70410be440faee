"""The DATA directory's ``manifest.json``: what an import produced, read back and checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bigembed.errors import BigembedError, DataLayoutError
from bigembed.storage.atomic import read_json
from bigembed.storage.edges import Bucket

DATA_FORMAT = "bigembed-data"
DATA_FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: one entity type (its layout is version 2's with one type)


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
        return DataManifest(
            path=path,
            entity_types=types,
            id_kind=first["ids"],
            num_partitions=P,
            entity_counts=[sum(t.counts[p] for t in types) for p in range(P)],
            relations=[r["name"] for r in raw["relations"]],
            relation_types=[(index[r["lhs"]], index[r["rhs"]]) for r in raw["relations"]],
            bucket_counts={s: dict(v["buckets"]) for s, v in raw["splits"].items()},
            raw=raw,
        )
    except (KeyError, TypeError, ValueError, StopIteration) as exc:
        raise DataLayoutError(f"{path}: manifest is missing or has a malformed field ({exc!r})") from None
