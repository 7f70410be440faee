"""Edge buckets on disk: one folder per (split, lhs partition, rhs partition).

Each bucket holds mmap-ninja NumPy memmaps ``lhs``, ``rhs`` (local offsets) and
``rel`` (relation index), plus ``weight`` (float32) in weighted DATA. Their dtypes are the
DATA manifest's ``edge_dtypes``: in the compact layout (DATA format 3, :func:`compact_dtypes`)
int32 offsets when every partition has fewer than 2**31 rows and the smallest integer type
for relation ids, 9 to 12 bytes an edge (4 + 4 + 1, 2 or 4) instead of 20; before it
(formats 1 and 2) int64, int64 and int32. Buckets are appended to chunk by
chunk while importing and read back as memory maps; readers widen to int64 where torch
indexes with them (a slab at a time while training, see ``trainer/bucket.py``).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mmap_ninja import numpy as ninja_np

from bigembed.errors import DataLayoutError

EdgeDtypes = dict[str, np.dtype]  # "lhs", "rhs", "rel" -> the dtype of that column's files

# The columns of DATA formats 1 and 2 (and of a manifest without ``edge_dtypes``).
LEGACY_DTYPES: EdgeDtypes = {"lhs": np.dtype(np.int64), "rhs": np.dtype(np.int64), "rel": np.dtype(np.int32)}
COLUMNS = LEGACY_DTYPES  # the old name
# What each column may hold (torch indexes with int32/int64 and reads uint8/int16/int32;
# it has no uint16/uint32 in the versions bigembed supports).
ALLOWED_DTYPES: dict[str, tuple[str, ...]] = {"lhs": ("int32", "int64"), "rhs": ("int32", "int64"),
                                              "rel": ("uint8", "int16", "int32")}
WEIGHT_DTYPE = np.float32  # the optional ``weight`` column of weighted DATA
MAX_INT32_ROWS = 2**31 - 1  # the most rows a partition may have for int32 offsets


def compact_dtypes(max_rows: int, num_relations: int) -> EdgeDtypes:
    """The smallest column dtypes for DATA whose largest partition has ``max_rows`` rows
    (all entity types together) and that has ``num_relations`` relations: lhs/rhs int32 when
    ``max_rows <= 2**31 - 1`` (else int64); rel uint8 for at most 256 relations, int16 for at
    most 32767, else int32."""
    offsets = np.dtype(np.int32) if max_rows <= MAX_INT32_ROWS else np.dtype(np.int64)
    rel = "uint8" if num_relations <= 256 else "int16" if num_relations <= 32767 else "int32"
    return {"lhs": offsets, "rhs": offsets, "rel": np.dtype(rel)}


@dataclass(frozen=True)
class Bucket:
    """A (lhs partition, rhs partition) pair."""

    lhs: int
    rhs: int

    @property
    def key(self) -> str:
        return f"{self.lhs}_{self.rhs}"

    @classmethod
    def from_key(cls, key: str) -> Bucket:
        """The bucket of a manifest's ``bucket_counts`` key (``"l_r"``)."""
        lhs, rhs = key.split("_")
        return cls(int(lhs), int(rhs))


@dataclass(frozen=True)
class EdgeArrays:
    """The edges of one bucket: ``lhs``/``rhs``: (n,) local offsets, ``rel``: (n,) relation
    indices, ``weight``: (n,) float32 or None when the DATA is unweighted.

    Read from disk, the columns have the DATA's ``edge_dtypes``: lhs/rhs int32 or int64, rel
    uint8, int16 or int32 (formats 1 and 2: always int64, int64, int32). Any reader that
    indexes a tensor with them must widen them first (``np.asarray(x, np.int64)``, or
    ``.long()``); arithmetic on them must not overflow their dtype (add partition offsets to
    an int64 copy, not to an int32 column)."""

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


def _fitted(name: str, values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` as a contiguous ``dtype`` array; a ValueError when one of them does not fit
    (casting would wrap it silently)."""
    values = np.asarray(values)
    if values.size and not np.can_cast(values.dtype, dtype, "safe"):
        if values.dtype.kind not in "iub":
            raise ValueError(f"edge column {name!r}: expected integers, got {values.dtype}")
        info = np.iinfo(dtype)
        lo, hi = int(values.min()), int(values.max())
        if lo < info.min or hi > info.max:
            bad = lo if lo < info.min else hi
            raise ValueError(f"edge column {name!r}: value {bad} does not fit {dtype.name} "
                             f"([{info.min}, {info.max}]); write it with a wider dtype")
    return np.ascontiguousarray(values, dtype=dtype)


def append_edges(folder: Path, edges: EdgeArrays, dtypes: EdgeDtypes | None = None) -> None:
    """Append ``edges`` to the bucket in ``folder``, creating it on first use. ``dtypes``: the
    dtype of each column's files (the manifest's ``edge_dtypes``; None: the old int64, int64,
    int32). A value that does not fit its column's dtype, or a column already written with
    another dtype, is a ValueError (nothing is written then)."""
    wanted = LEGACY_DTYPES if dtypes is None else {k: np.dtype(dtypes[k]) for k in LEGACY_DTYPES}
    columns = dict(wanted, **({"weight": np.dtype(WEIGHT_DTYPE)} if edges.weight is not None else {}))
    arrays = {}
    for name, dtype in columns.items():
        column = folder / name
        if name != "weight":
            arrays[name] = _fitted(name, getattr(edges, name), dtype)
        else:
            arrays[name] = np.ascontiguousarray(edges.weight, dtype=dtype)
        dtype_file = column / "dtype.ninja"
        if dtype_file.exists() and (held := dtype_file.read_text().strip()) != dtype.name:
            raise ValueError(f"{column}: the column holds {held}, cannot append {dtype.name} values to it")
    for name, array in arrays.items():
        append_column(folder / name, array)


def append_column(column: Path, array: np.ndarray) -> None:
    """Append a 1-d array to the mmap-ninja NumPy column in ``column`` (created on first use),
    with plain file writes rather than through a memory map: a full disk is then an OSError
    that the caller reports, where a write through a map would kill the process with SIGBUS,
    and there is no msync per call (the output is fsynced once, when it is complete). The
    files are those mmap-ninja writes: ``data.ninja`` (the values end to end), ``dtype.ninja``,
    ``shape.ninja`` (little-endian uint64 per axis), ``order.ninja`` and ``type.ninja``."""
    array = np.ascontiguousarray(array)
    if array.ndim != 1:
        raise ValueError(f"{column}: append_column takes a 1-d array, got shape {array.shape}")
    shape_file = column / "shape.ninja"
    if shape_file.exists():
        held = int(np.frombuffer(shape_file.read_bytes(), "<u8")[0])
    else:
        column.mkdir(parents=True, exist_ok=True)
        (column / "type.ninja").write_bytes(b"numpy")
        (column / "dtype.ninja").write_bytes(array.dtype.name.encode())
        (column / "order.ninja").write_bytes(b"C")
        held = 0
    with open(column / "data.ninja", "ab" if held else "wb") as data:
        data.write(array.data.cast("B"))
    shape_file.write_bytes(np.array([held + len(array)], "<u8").tobytes())


def read_edges(data_dir: Path, split: str, bucket: Bucket, count: int, weighted: bool = False,
               dtypes: EdgeDtypes | None = None) -> EdgeArrays:
    """Memory-map a bucket's edges; ``count`` (from the manifest) is checked against the files,
    and so is each column's dtype against ``dtypes`` (the manifest's ``edge_dtypes``; None: the
    old int64, int64, int32)."""
    wanted = LEGACY_DTYPES if dtypes is None else {k: np.dtype(dtypes[k]) for k in LEGACY_DTYPES}
    if count == 0:
        return EdgeArrays(
            np.empty(0, wanted["lhs"]), np.empty(0, wanted["rhs"]), np.empty(0, wanted["rel"]),
            np.empty(0, WEIGHT_DTYPE) if weighted else None,
        )
    folder = bucket_dir(data_dir, split, bucket)
    arrays = {}
    columns = dict(wanted, **({"weight": np.dtype(WEIGHT_DTYPE)} if weighted else {}))
    for name, dtype in columns.items():
        try:
            arr = ninja_np.open_existing(folder / name, mode="r")
        except (OSError, ValueError) as exc:
            raise DataLayoutError(f"{folder / name}: cannot open edge column ({exc})") from None
        if arr.shape != (count,) or arr.dtype != dtype:
            raise DataLayoutError(
                f"{folder / name}: expected {count} {np.dtype(dtype).name} values "
                f"as the manifest says, got shape {arr.shape} {arr.dtype}"
                + ("" if arr.dtype == dtype else " (the edge files and manifest.json disagree; re-import the edges)")
            )
        arrays[name] = arr
    return EdgeArrays(**arrays)
