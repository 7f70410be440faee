"""A partition's rows as checkpoint shards: one shard per (entity type, partition).

In memory a partition is one table whose rows are the nodes of the first
entity type, then of the second, and so on (``DataManifest.type_ranges``); on
disk each type's rows are a shard of their own, so an export or a reader of one
type touches only that type's rows. With one entity type the partition is
exactly one shard and is read without a copy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from bigembed.checkpoint.versions import GLOBAL_EMB_KEY, VersionManifest, emb_key, read_shard_of
from bigembed.storage.data_manifest import DataManifest
from bigembed.storage.dtypes import to_float32

KeyOf = Callable[[str, int], str]


def read_partition(read: Callable[[str], np.ndarray], data: DataManifest, partition: int,
                   key_of: KeyOf = emb_key) -> np.ndarray:
    """Partition ``partition``'s rows of every type, in row order (``read(key)`` reads a shard)."""
    arrays = [read(key_of(t.name, partition)) for t in data.entity_types]
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def write_partition(write: Callable[[str, np.ndarray], None], data: DataManifest, partition: int,
                    array: np.ndarray, key_of: KeyOf = emb_key) -> None:
    """Write ``array`` (the partition's rows) as one shard per entity type."""
    for t, (start, stop) in zip(data.entity_types, data.type_ranges(partition), strict=True):
        write(key_of(t.name, partition), array[start:stop])


def read_globals(run_dir: Path, manifest: VersionManifest) -> np.ndarray | None:
    """The (entity types, dim) global vectors of ``model.global_emb`` in ``manifest``, or None."""
    if GLOBAL_EMB_KEY not in manifest.shards:
        return None
    return read_shard_of(run_dir, manifest, GLOBAL_EMB_KEY)


def add_global(rows: np.ndarray, globals_: np.ndarray | None, data: DataManifest, partition: int,
               entity_type: int | None = None) -> np.ndarray:
    """``rows`` (float32) with each entity type's global vector added: the embeddings the model
    scores with. ``entity_type``: ``rows`` are that type's rows of ``partition`` only, else the
    whole partition's. Adds in place where ``rows`` is writable."""
    if globals_ is None:
        return rows
    if not rows.flags.writeable:
        rows = rows.copy()
    if entity_type is not None:
        rows += globals_[entity_type]
        return rows
    for t, (start, stop) in enumerate(data.type_ranges(partition)):
        rows[start:stop] += globals_[t]
    return rows


def read_embeddings(run_dir: Path, manifest: VersionManifest, data: DataManifest, partition: int) -> np.ndarray:
    """Partition ``partition``'s embeddings in ``manifest``, verified and widened to float32
    (whatever ``training.storage_dtype`` stored them as), with ``model.global_emb``'s vectors
    added: what evaluation ranks with."""
    rows = to_float32(read_partition(lambda key: read_shard_of(run_dir, manifest, key), data, partition))
    return add_global(rows, read_globals(run_dir, manifest), data, partition)
