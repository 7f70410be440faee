"""Checkpoints: what a version contains, committing it atomically, resuming, cleaning up."""

from bigembed.checkpoint.partitions import add_global, read_embeddings, read_globals, read_partition, write_partition
from bigembed.checkpoint.pins import pin_version
from bigembed.checkpoint.run import check_same_data, read_evals, read_run_config
from bigembed.checkpoint.versions import (
    GLOBAL_ADAGRAD_KEY,
    GLOBAL_EMB_KEY,
    RELATION_ADAGRAD_KEY,
    RELATION_PARAMS_KEY,
    Position,
    VersionManifest,
    VersionWriter,
    adagrad_key,
    check_position,
    collect_garbage,
    committed_versions,
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
    "check_position",
    "check_same_data",
    "collect_garbage",
    "committed_versions",
    "emb_key",
    "load_good_version",
    "pin_version",
    "read_current",
    "read_embeddings",
    "read_evals",
    "read_globals",
    "read_manifest",
    "read_partition",
    "read_run_config",
    "read_shard_of",
    "remove_uncommitted",
    "write_partition",
]
