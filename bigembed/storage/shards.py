"""Embedding and optimizer shards: one zarr array per (entity type, partition).

A shard is written to a temp folder, fsynced, renamed into place, and its sha256
(of the array's raw bytes) is returned so the checkpoint manifest can record it.
Reading verifies that checksum, so a damaged shard is caught, never trained on.

Shards are zarr v3 arrays that any zarr reader opens, in one plain layout: no compression,
little-endian bytes, chunks of whole rows. That layout is written and read here directly,
its ``zarr.json`` included (:class:`RawLayout`), without importing zarr, whose import alone
took 0.5 s of every command's start-up (a fifth of a short training command's fixed cost);
zarr itself is imported only to read a shard in any other layout (written by another tool).
This is the only module that knows zarr.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bigembed.errors import CheckpointError
from bigembed.storage.atomic import atomic_replace_dir, fsync_tree
from bigembed.storage.dtypes import BFLOAT16_BITS

CHUNK_BYTES = 8 << 20  # zarr chunk size; bounds the transient IO buffers
METADATA = "zarr.json"
# the dtypes a raw layout may hold (bfloat16 rows are stored as their uint16 bits)
RAW_DTYPES = ("float32", "float16", "float64", "uint16", "int8", "uint8", "int16", "int32", "int64", "uint32",
              "uint64")
_KEY_ENCODING = {"name": "default", "configuration": {"separator": "/"}}


@dataclass(frozen=True)
class RawLayout:
    """A shard in :func:`write_shard`'s layout: ``step`` whole rows a chunk, each chunk file the
    rows' plain little-endian bytes (the last padded to a whole chunk), at zarr's default chunk
    keys (``c/<i>/0...``)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    step: int
    every_chunk: bool = True  # every chunk file was written (a missing one is damage)
    fill_value: float | int = 0

    def chunk_file(self, path: Path, i: int) -> Path:
        return path.joinpath("c", str(i), *("0",) * (len(self.shape) - 1))

    def metadata(self, attributes: dict[str, Any]) -> dict[str, Any]:
        """The ``zarr.json`` zarr itself writes for this layout (a test checks they agree)."""
        return {
            "shape": list(self.shape),
            "data_type": self.dtype.name,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [self.step, *self.shape[1:]]}},
            "chunk_key_encoding": _KEY_ENCODING,
            "fill_value": float(self.fill_value) if self.dtype.kind == "f" else int(self.fill_value),
            "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
            "attributes": attributes,
            "zarr_format": 3,
            "node_type": "array",
            "storage_transformers": [],
        }

    @classmethod
    def of(cls, path: Path) -> RawLayout | None:
        """The layout of the shard at ``path`` from its ``zarr.json``; None when it is another
        layout (zarr then reads it). A missing or unreadable ``zarr.json`` raises."""
        meta = json.loads((Path(path) / METADATA).read_text())
        if not isinstance(meta, dict) or meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
            return None
        shape, grid, codecs = meta.get("shape"), meta.get("chunk_grid"), meta.get("codecs")
        name = meta.get("data_type")
        if (sys.byteorder != "little" or not isinstance(shape, list) or not shape
                or not all(isinstance(n, int) and n >= 0 for n in shape) or name not in RAW_DTYPES
                or meta.get("storage_transformers") not in (None, []) or meta.get("chunk_key_encoding") != _KEY_ENCODING
                or not isinstance(grid, dict) or grid.get("name") != "regular"):
            return None
        chunk_shape = (grid.get("configuration") or {}).get("chunk_shape")
        if (not isinstance(chunk_shape, list) or len(chunk_shape) != len(shape) or chunk_shape[1:] != shape[1:]
                or not isinstance(chunk_shape[0], int) or chunk_shape[0] < 1):
            return None
        dtype = np.dtype(name)
        little = [{"name": "bytes", "configuration": {"endian": "little"}}]
        if codecs != little and not (dtype.itemsize == 1 and codecs in ([{"name": "bytes"}],
                                                                         [{"name": "bytes", "configuration": {}}])):
            return None
        fill = meta.get("fill_value", 0)
        if isinstance(fill, bool) or not isinstance(fill, int | float):
            return None  # "NaN" and the like: zarr knows what they mean
        attributes = meta.get("attributes") or {}
        return cls(tuple(shape), dtype, chunk_shape[0], bool(attributes.get("bigembed_all_chunks", False)), fill)


def array_checksum(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


class _Checksum:
    """:func:`array_checksum` of an array, worked out on a thread beside the caller's writes
    (hashlib drops the interpreter lock) when the array is large: writing a 512 MB shard took
    1.2-1.3 s here, as fast as the disk takes dirty pages, and hashing it 0.3 s more."""

    def __init__(self, array: np.ndarray | None) -> None:
        self.value: str | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if array is not None and array.nbytes >= CHUNK_BYTES:
            self._thread = threading.Thread(target=self._run, args=(array,), name="bigembed-hash", daemon=True)
            self._thread.start()
        elif array is not None:
            self.value = array_checksum(array)

    def _run(self, array: np.ndarray) -> None:
        try:
            self.value = array_checksum(array)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller in result()
            self._error = exc

    def result(self) -> str | None:
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self.value


def write_shard(path: Path, array: np.ndarray, durable: bool = True, checksum: bool = True) -> str | None:
    """Write ``array`` (2-d or 1-d; float32, float16 or bfloat16 bits) as a zarr array at ``path``; return its checksum.

    ``durable=False`` skips the fsync: the caller syncs the shard (:func:`sync_shard`)
    before anything refers to it (a checkpoint commit does; a partition evicted from the
    buffer in between costs no fsync, and may be written several times before then).
    ``checksum=False`` skips the hash (returns None): the caller hashes the file later with
    :func:`shard_checksum`, once, if it is still the newest copy by then."""
    path = Path(path)
    array = np.ascontiguousarray(array)
    digest = _Checksum(array if checksum else None)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    row_bytes = max(1, array.itemsize * (array.size // max(1, array.shape[0])))
    chunks = (min(max(1024, CHUNK_BYTES // row_bytes), max(1, array.shape[0])),) + array.shape[1:]
    if array.dtype.name not in RAW_DTYPES or array.ndim < 1 or sys.byteorder != "little":
        raise ValueError(f"{path}: cannot store a {array.dtype} array of shape {array.shape} as a shard")
    layout = RawLayout(tuple(array.shape), array.dtype, chunks[0])
    attributes = {"bigembed_all_chunks": True, **({"bigembed_dtype": "bfloat16"} if array.dtype == BFLOAT16_BITS
                                                  else {})}
    try:
        tmp.mkdir(parents=True)
        (tmp / METADATA).write_text(json.dumps(layout.metadata(attributes), indent=2))
        _write_raw(tmp, layout, array)
        if durable:
            fsync_tree(tmp)
        atomic_replace_dir(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"{path}: cannot write shard ({exc.strerror or exc})") from None
    return digest.result()


def shard_checksum(path: Path, shape: tuple[int, ...]) -> str:
    """The checksum :func:`write_shard` would have returned for the shard at ``path``,
    computed from its files a chunk at a time (no whole copy of the array in memory)."""
    path = Path(path)
    try:
        z = RawLayout.of(path)
        if z is None:
            return array_checksum(read_shard(path, None, shape))
        if tuple(z.shape) != tuple(shape):
            raise CheckpointError(f"{path}: shard has shape {z.shape}, expected {shape}")
        digest = hashlib.sha256()
        step = z.step
        row_bytes = z.dtype.itemsize * int(np.prod(z.shape[1:], dtype=np.int64))
        for i, start in enumerate(range(0, z.shape[0], step)):
            want = (min(start + step, z.shape[0]) - start) * row_bytes
            with open(z.chunk_file(path, i), "rb") as f:
                data = f.read(want)
            if len(data) != want:
                raise ValueError(f"chunk {i} is short")
            digest.update(data)
        return digest.hexdigest()
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged store raises many types
        raise CheckpointError(f"{path}: shard is missing or damaged ({type(exc).__name__}: {exc})") from None


def overwrite_shard(path: Path, array: np.ndarray, checksum: bool = True) -> tuple[bool, str | None]:
    """Write ``array`` over the shard at ``path`` in place, file by file, if that shard has
    :func:`write_shard`'s raw layout with the same shape and dtype; returns ``(done, checksum)``
    (``done`` False: nothing was written, use :func:`write_shard`).

    Only for shards nothing refers to yet (a checkpoint's staged copies): unlike
    :func:`write_shard` it is not atomic, so a failure leaves the shard half old, half new.
    What it saves is the allocation and freeing of a whole new copy each time: measured on a
    256 MB partition, 0.03 s of CPU against 0.1 s, and on a 2-core machine evictions compete
    with training for the cores."""
    path = Path(path)
    array = np.ascontiguousarray(array)
    try:
        z = RawLayout.of(path)
    except Exception:  # noqa: BLE001 - no readable shard there: the caller writes a fresh one
        return False, None
    if z is None or not z.every_chunk or tuple(z.shape) != tuple(array.shape) or z.dtype != array.dtype:
        return False, None
    step = z.step
    digest = _Checksum(array if checksum else None)
    try:
        for i, start in enumerate(range(0, array.shape[0], step)):
            data = array[start : start + step].reshape(-1).view(np.uint8).data
            with open(z.chunk_file(path, i), "r+b") as f:
                f.write(data)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write shard ({exc.strerror or exc})") from None
    return True, digest.result()


def sync_shard(path: Path) -> None:
    """Make a shard written with ``durable=False`` durable."""
    try:
        fsync_tree(Path(path))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot sync shard ({exc.strerror or exc})") from None


def _read_raw(path: Path, z: RawLayout, out: np.ndarray | None = None) -> np.ndarray:
    """Read every chunk file into one array (``out`` where it has the shard's shape and dtype
    and is contiguous): no intermediate copies and no per-chunk overhead (zarr's own
    chunk-by-chunk read is about 5x slower for a 256 MB shard)."""
    fits = (out is not None and tuple(out.shape) == tuple(z.shape) and out.dtype == z.dtype
            and out.flags.c_contiguous and out.flags.writeable)
    array = out if fits and out is not None else np.empty(z.shape, dtype=z.dtype)
    step = z.step
    for i, start in enumerate(range(0, z.shape[0], step)):
        rows = array[start : start + step]
        target = rows.reshape(-1).view(np.uint8).data  # a writable memoryview of the rows
        try:
            f = open(z.chunk_file(path, i), "rb")
        except FileNotFoundError:
            if z.every_chunk:  # :func:`_write_raw` wrote it: its absence is damage (or a deleted
                raise  # version), never rows of the fill value
            rows.fill(z.fill_value)  # zarr itself leaves out a chunk that is all fill value
            continue
        with f:
            if f.readinto(target) != target.nbytes:
                raise ValueError(f"chunk {i} is short")
    return array


def _write_raw(path: Path, z: RawLayout, array: np.ndarray) -> None:
    """Write each chunk's rows as its file, as zarr would with no compression (the last
    chunk padded to the full chunk shape), without zarr's per-chunk encoding (about 10x
    the time of the write itself for a 256 MB shard)."""
    step = z.step
    chunk_bytes = step * array.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
    for i, start in enumerate(range(0, array.shape[0], step)):
        data = array[start : start + step].reshape(-1).view(np.uint8).data
        file = z.chunk_file(path, i)
        file.parent.mkdir(parents=True, exist_ok=True)
        with open(file, "wb") as f:
            f.write(data)
            if data.nbytes < chunk_bytes:
                f.write(bytes(chunk_bytes - data.nbytes))


def read_shard(path: Path, checksum: str | None, shape: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
    """Read a shard, checking its shape and (when given) its checksum. ``out``: an array to
    read into if it fits (the shard's shape and dtype, contiguous), to spare allocating and
    faulting in a fresh one (an array that does not fit is left as it is)."""
    path = Path(path)
    try:
        raw = RawLayout.of(path)
        array = _read_raw(path, raw, out) if raw is not None else _read_with_zarr(path)
    except Exception as exc:  # noqa: BLE001 - zarr (or a damaged file) raises many types
        raise CheckpointError(f"{path}: shard is missing or damaged ({type(exc).__name__}: {exc})") from None
    if tuple(array.shape) != tuple(shape):
        raise CheckpointError(f"{path}: shard has shape {array.shape}, expected {shape}")
    if checksum is not None and array_checksum(array) != checksum:
        raise CheckpointError(f"{path}: shard checksum mismatch (the file is damaged)")
    return array


def _read_with_zarr(path: Path) -> np.ndarray:
    """A shard in another layout (written by another tool, or compressed): zarr decodes it,
    chunk by chunk."""
    import zarr  # only here: its import costs every command 0.5 s of start-up

    z = zarr.open_array(str(path), mode="r")
    array = np.empty(z.shape, dtype=z.dtype)
    step = z.chunks[0] if z.ndim else 1
    for start in range(0, z.shape[0] if z.ndim else 0, step):
        array[start : start + step] = z[start : start + step]
    return array


class ShardStore(Protocol):
    """Where a RUN's shards are kept, as the checkpoint code sees it
    (:class:`~bigembed.checkpoint.versions.VersionWriter`): the one interface in front of
    the storage format, so another backend (shared storage for several machines, an object
    store) is a class of its own and nothing else changes. Paths are the shard paths inside
    the RUN that the manifests record. Every implementation must pass the contract in
    tests/storage/test_shard_store.py."""

    suffix: str  # of a shard's path (".zarr")

    def write(self, path: Path, array: np.ndarray, durable: bool = True, checksum: bool = True) -> str | None:
        """Write ``array`` whole at ``path`` (atomically: an old shard there stays until the new
        one is complete); its sha256 (None with ``checksum=False``). ``durable=False``: the
        caller calls :meth:`sync` before anything refers to it."""
        ...

    def overwrite(self, path: Path, array: np.ndarray, checksum: bool = True) -> tuple[bool, str | None]:
        """Rewrite a shard nothing refers to yet in place, if it has ``array``'s shape and
        dtype; ``(False, None)`` when it cannot (then :meth:`write`)."""
        ...

    def read(self, path: Path, checksum: str | None, shape: tuple[int, ...],
             out: np.ndarray | None = None) -> np.ndarray:
        """The shard, verified against ``shape`` and ``checksum`` (when given): a
        :class:`~bigembed.errors.CheckpointError` naming ``path`` otherwise."""
        ...

    def checksum(self, path: Path, shape: tuple[int, ...]) -> str:
        """What :meth:`write` would have returned, from the stored bytes."""
        ...

    def sync(self, path: Path) -> None:
        """Make a shard written with ``durable=False`` durable."""
        ...


class LocalShards:
    """Shards as zarr arrays in the RUN's folder on a local (or shared POSIX) filesystem."""

    suffix = ".zarr"

    def write(self, path: Path, array: np.ndarray, durable: bool = True, checksum: bool = True) -> str | None:
        return write_shard(path, array, durable, checksum)

    def overwrite(self, path: Path, array: np.ndarray, checksum: bool = True) -> tuple[bool, str | None]:
        return overwrite_shard(path, array, checksum)

    def read(self, path: Path, checksum: str | None, shape: tuple[int, ...],
             out: np.ndarray | None = None) -> np.ndarray:
        return read_shard(path, checksum, shape, out)

    def checksum(self, path: Path, shape: tuple[int, ...]) -> str:
        return shard_checksum(path, shape)

    def sync(self, path: Path) -> None:
        sync_shard(path)


LOCAL_SHARDS: ShardStore = LocalShards()
