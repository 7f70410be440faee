"""Edge buckets on disk: one folder per (split, lhs partition, rhs partition).

Each bucket holds mmap-ninja NumPy memmaps ``lhs``, ``rhs`` (int64 local offsets)
and ``rel`` (int32 relation index). Buckets are appended to chunk by chunk while
importing and read back zero-copy as torch tensors while training.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mmap_ninja import numpy as ninja_np

from bigembed.errors import DataLayoutError

COLUMNS = {"lhs": np.int64, "rhs": np.int64, "rel": np.int32}
WEIGHT_DTYPE = np.float32  # the optional ``weight`` column of weighted DATA


@dataclass(frozen=True)
class Bucket:
    """A (lhs partition, rhs partition) pair."""

    lhs: int
    rhs: int

    @property
    def key(self) -> str:
        return f"{self.lhs}_{self.rhs}"


@dataclass(frozen=True)
class EdgeArrays:
    """The edges of one bucket: ``lhs``/``rhs``: (n,) int64 local offsets, ``rel``: (n,) int32,
    ``weight``: (n,) float32 or None when the DATA is unweighted."""

    lhs: np.ndarray
    rhs: np.ndarray
    rel: np.ndarray
    weight: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.lhs.shape[0])

    def drop_pages(self) -> None:
        """Let go of the mapped pages read so far. The columns are memory maps: every page
        a slab copied out stays mapped, and counted in the process's resident memory, until
        the mapping goes, so without this a bucket of 100M edges would hold 2 GB. The pages
        stay in the page cache; a later read maps them again."""
        for column in (self.lhs, self.rhs, self.rel, self.weight):
            base = column
            while base is not None and not isinstance(base, np.memmap):
                base = getattr(base, "base", None)
            mapping = getattr(base, "_mmap", None)
            if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
                mapping.madvise(mmap.MADV_DONTNEED)


def bucket_dir(data_dir: Path, split: str, bucket: Bucket) -> Path:
    return Path(data_dir) / "edges" / split / bucket.key


def append_edges(folder: Path, edges: EdgeArrays) -> None:
    """Append ``edges`` to the bucket in ``folder``, creating it on first use."""
    columns = dict(COLUMNS, **({"weight": WEIGHT_DTYPE} if edges.weight is not None else {}))
    for name, dtype in columns.items():
        array = np.ascontiguousarray(getattr(edges, name), dtype=dtype)
        column = folder / name
        if (column / "data.ninja").exists():
            ninja_np.extend_dir(column, array)
        else:
            ninja_np.from_ndarray(column, array).flush()


def read_edges(data_dir: Path, split: str, bucket: Bucket, count: int, weighted: bool = False) -> EdgeArrays:
    """Memory-map a bucket's edges; ``count`` (from the manifest) is checked against the files."""
    if count == 0:
        return EdgeArrays(
            np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int32),
            np.empty(0, WEIGHT_DTYPE) if weighted else None,
        )
    folder = bucket_dir(data_dir, split, bucket)
    arrays = {}
    columns = dict(COLUMNS, **({"weight": WEIGHT_DTYPE} if weighted else {}))
    for name, dtype in columns.items():
        try:
            arr = ninja_np.open_existing(folder / name, mode="r")
        except (OSError, ValueError) as exc:
            raise DataLayoutError(f"{folder / name}: cannot open edge column ({exc})") from None
        if arr.shape != (count,) or arr.dtype != dtype:
            raise DataLayoutError(
                f"{folder / name}: expected {count} {np.dtype(dtype).name} values "
                f"as the manifest says, got shape {arr.shape} {arr.dtype}"
            )
        arrays[name] = arr
    return EdgeArrays(**arrays)
