"""Checkpoints: what a version contains, committing it atomically, resuming, cleaning up."""

from bigembed.checkpoint.partitions import add_global, read_embeddings, read_globals, read_partition, write_partition
from bigembed.checkpoint.versions import (
    GLOBAL_ADAGRAD_KEY,
    GLOBAL_EMB_KEY,
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
    "GLOBAL_ADAGRAD_KEY",
    "GLOBAL_EMB_KEY",
    "RELATION_ADAGRAD_KEY",
    "RELATION_PARAMS_KEY",
    "Position",
    "VersionManifest",
    "VersionWriter",
    "adagrad_key",
    "add_global",
    "collect_garbage",
    "emb_key",
    "load_good_version",
    "read_current",
    "read_embeddings",
    "read_globals",
    "read_manifest",
    "read_partition",
    "read_shard_of",
    "remove_uncommitted",
    "write_partition",
]
