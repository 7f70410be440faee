"""The DATA directory's ``manifest.json``: what an import produced, read back and checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bigembed.errors import BigembedError, DataLayoutError
from bigembed.storage.atomic import read_json
from bigembed.storage.edges import Bucket

DATA_FORMAT = "bigembed-data"
DATA_FORMAT_VERSION = 1


@dataclass(frozen=True)
class DataManifest:
    """A parsed, validated DATA manifest.

    ``entity_counts[p]`` is the number of nodes of partition ``p``; ``bucket_counts``
    maps split -> ``"l_r"`` -> edge count.
    """

    path: Path
    entity: str
    id_kind: str  # "string" or "int"
    num_partitions: int
    entity_counts: list[int]
    relations: list[str]
    bucket_counts: dict[str, dict[str, int]]
    raw: dict[str, Any]

    @property
    def weighted(self) -> bool:
        """Whether the edges carry a float ``weight`` column."""
        return bool(self.raw.get("weighted", False))

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
    if raw.get("format_version") != DATA_FORMAT_VERSION:
        raise DataLayoutError(
            f"{path}: format_version {raw.get('format_version')} is not supported "
            f"(this bigembed reads {DATA_FORMAT_VERSION}); re-import the edges"
        )
    try:
        (entity, info), = raw["entities"].items()
        return DataManifest(
            path=path,
            entity=entity,
            id_kind=info["ids"],
            num_partitions=int(info["num_partitions"]),
            entity_counts=[int(c) for c in info["counts"]],
            relations=[r["name"] for r in raw["relations"]],
            bucket_counts={s: dict(v["buckets"]) for s, v in raw["splits"].items()},
            raw=raw,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataLayoutError(f"{path}: manifest is missing or has a malformed field ({exc})") from None
