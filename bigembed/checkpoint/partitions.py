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

from bigembed.checkpoint.versions import VersionManifest, emb_key, read_shard_of
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


def read_embeddings(run_dir: Path, manifest: VersionManifest, data: DataManifest, partition: int) -> np.ndarray:
    """Partition ``partition``'s embeddings in ``manifest``, verified and widened to float32
    (whatever ``training.storage_dtype`` stored them as): what evaluation ranks with."""
    return to_float32(read_partition(lambda key: read_shard_of(run_dir, manifest, key), data, partition))
