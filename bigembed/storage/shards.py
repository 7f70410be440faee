"""Embedding and optimizer shards: one zarr array per (entity type, partition).

A shard is written to a temp folder, fsynced, renamed into place, and its sha256
(of the array's raw bytes) is returned so the checkpoint manifest can record it.
Reading verifies that checksum, so a damaged shard is caught, never trained on.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import zarr

from bigembed.errors import CheckpointError
from bigembed.storage.atomic import atomic_replace_dir, fsync_tree

CHUNK_BYTES = 8 << 20  # zarr chunk size; bounds the transient IO buffers


def array_checksum(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


def write_shard(path: Path, array: np.ndarray) -> str:
    """Write ``array`` (2-d or 1-d float32) as a zarr array at ``path``; return its checksum."""
    path = Path(path)
    array = np.ascontiguousarray(array)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    row_bytes = max(1, array.itemsize * (array.size // max(1, array.shape[0])))
    chunks = (min(max(1024, CHUNK_BYTES // row_bytes), max(1, array.shape[0])),) + array.shape[1:]
    try:
        z = zarr.create_array(
            store=str(tmp),
            shape=array.shape,
            chunks=chunks,
            dtype=array.dtype,
            compressors=None,
            overwrite=True,
        )
        # Chunk by chunk: a whole-array assignment encodes many chunks at once,
        # which costs several chunks of extra memory.
        for start in range(0, array.shape[0], chunks[0]):
            z[start : start + chunks[0]] = array[start : start + chunks[0]]
        fsync_tree(tmp)
        atomic_replace_dir(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"{path}: cannot write shard ({exc.strerror or exc})") from None
    return array_checksum(array)


def read_shard(path: Path, checksum: str | None, shape: tuple[int, ...]) -> np.ndarray:
    """Read a shard, checking its shape and (when given) its checksum."""
    try:
        z = zarr.open_array(str(path), mode="r")
        array = np.empty(z.shape, dtype=z.dtype)
        step = z.chunks[0] if z.ndim else 1
        for start in range(0, z.shape[0] if z.ndim else 0, step):
            array[start : start + step] = z[start : start + step]
    except Exception as exc:  # noqa: BLE001 - zarr raises many types for a damaged store
        raise CheckpointError(f"{path}: shard is missing or damaged ({type(exc).__name__}: {exc})") from None
    if tuple(array.shape) != tuple(shape):
        raise CheckpointError(f"{path}: shard has shape {array.shape}, expected {shape}")
    if checksum is not None and array_checksum(array) != checksum:
        raise CheckpointError(f"{path}: shard checksum mismatch (the file is damaged)")
    return array
