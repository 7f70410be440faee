"""Checkpoints: what a version contains, committing it atomically, resuming, cleaning up."""

from bigembed.checkpoint.partitions import read_embeddings, read_partition, write_partition
from bigembed.checkpoint.versions import (
    RELATION_ADAGRAD_KEY,
    RELATION_PARAMS_KEY,
    Position,
    VersionManifest,
    VersionWriter,
    adagrad_key,
    collect_garbage,
    emb_key,
    load_good_version,
    read_current,
    read_manifest,
    read_shard_of,
    remove_uncommitted,
)

__all__ = [
    "RELATION_ADAGRAD_KEY",
    "RELATION_PARAMS_KEY",
    "Position",
    "VersionManifest",
    "VersionWriter",
    "adagrad_key",
    "collect_garbage",
    "emb_key",
    "load_good_version",
    "read_current",
    "read_embeddings",
    "read_manifest",
    "read_partition",
    "read_shard_of",
    "remove_uncommitted",
    "write_partition",
]
