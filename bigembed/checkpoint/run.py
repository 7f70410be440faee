"""A RUN directory: its saved config, what DATA it trains on, its stats log.

``config.json`` records the resolved config and a fingerprint of the DATA it was
started on (entity counts, relations), so a resumed run can refuse a different
graph or conflicting settings with a clear message.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bigembed.config import flatten, with_legacy_values
from bigembed.errors import BigembedError, CheckpointError, ConfigConflictError
from bigembed.storage.atomic import atomic_write_json, read_json
from bigembed.storage.data_manifest import DataManifest

RUN_FORMAT = "bigembed-run"
RUN_FORMAT_VERSION = 2  # 2: relation parameters stored flat, per relation

# Keys a resumed run may change without --override: they do not change what is learnt.
FREE_TO_CHANGE = {
    "training.epochs",
    "training.workers",
    "training.kernels",
    "training.ranking_gradients",
    "training.device",
    "training.eval_every",
    "training.early_stopping",
    "checkpoint.interval_seconds",
    "checkpoint.keep_versions",
    "checkpoint.max_commit_share",
    "distributed.dead_after_seconds",
    "distributed.connect_timeout_seconds",
}
# Keys no run may change, because the stored shards depend on them.
NEVER_CHANGE = {"model.dim", "model.operator", "model.reciprocal", "model.global_emb", "training.optimizer",
                "training.storage_dtype"}


def _never_changes(key: str) -> bool:
    return key in NEVER_CHANGE or (key.startswith("relations.") and key.endswith(".operator"))


def data_fingerprint(data: DataManifest) -> dict[str, Any]:
    return {
        "path": os.path.abspath(data.path.parent),
        "entities": {t.name: t.counts for t in data.entity_types},
        "entity_counts": data.entity_counts,
        "relations": data.relations,
        "relation_types": [[data.type_names[a], data.type_names[b]] for a, b in data.relation_types],
        "fingerprint": data.fingerprint,
    }


def is_run(run_dir: Path) -> bool:
    return (Path(run_dir) / "config.json").is_file()


def write_run_config(run_dir: Path, config: dict[str, Any], data: DataManifest) -> None:
    atomic_write_json(
        Path(run_dir) / "config.json",
        {"format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION, "config": config,
         "data": data_fingerprint(data)},
    )


def read_run_config(run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such RUN directory (create one with `bigembed train`)")
    path = run_dir / "config.json"
    try:
        raw = read_json(path, "run config")
    except BigembedError as exc:
        raise CheckpointError(f"{exc} (is {run_dir} a bigembed RUN directory?)") from None
    if not isinstance(raw, dict) or raw.get("format") != RUN_FORMAT:
        raise CheckpointError(f"{path}: not a bigembed run config")
    if raw.get("format_version") != RUN_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: run format_version {raw.get('format_version')} is not supported "
            f"(this bigembed reads {RUN_FORMAT_VERSION}); train a new RUN"
        )
    if isinstance(raw.get("config"), dict):  # settings added since the run was written: its values
        raw["config"] = with_legacy_values(raw["config"])
    return raw


def check_same_data(run_dir: Path, saved: dict[str, Any], data: DataManifest) -> None:
    want = saved["data"]
    got = data_fingerprint(data)
    if "entity" in want:  # written before entity types: one type, named by "entity"
        want = {**want, "entities": {want["entity"]: want["entity_counts"]},
                "relation_types": [[want["entity"]] * 2 for _ in want["relations"]]}
    for key in ("entity_counts", "entities", "relations", "relation_types"):
        if want[key] != got[key]:
            raise ConfigConflictError(
                f"{run_dir}: was trained on {want['path']}, whose {key} differ from {got['path']}'s; "
                "use the same DATA or a new RUN directory"
            )
    _check_fingerprints(run_dir, want, got)


def _check_fingerprints(run_dir: Path, want: dict[str, Any], got: dict[str, Any]) -> None:
    """Refuse a DATA whose node dictionary, partitioning or edges differ from those the RUN
    was trained on, even when every count agrees (the same files imported with another
    ``--seed``, other names of the same shape, a re-import over the same path). RUNs or
    DATA from before fingerprints are not checked."""
    old, new = want.get("fingerprint"), got.get("fingerprint")
    if not old or not new:
        return
    if old["nodes"] != new["nodes"]:
        raise ConfigConflictError(
            f"{run_dir}: was trained on DATA {want['path']} (nodes {old['nodes'][:12]}), but {got['path']} has "
            f"other nodes or partitioning (nodes {new['nodes'][:12]}): it was imported again from other files "
            "or with another --seed or -p; rows would get other nodes' names. Use the DATA the RUN was "
            "trained on, or train a new RUN")
    for split, digest in sorted(old.get("splits", {}).items()):
        other = new.get("splits", {}).get(split)
        if other is not None and other != digest:
            raise ConfigConflictError(
                f"{run_dir}: was trained on DATA {want['path']} whose {split!r} edges (fingerprint {digest[:12]}) "
                f"differ from {got['path']}'s ({other[:12]}); use the DATA the RUN was trained on, or train a new RUN")


def config_conflicts(saved: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(keys needing --override, keys that can never change) between two config dicts."""
    old_flat, new_flat = flatten(saved), flatten(new)
    keys = set(old_flat) | set(new_flat)
    changed = sorted(k for k in keys if old_flat.get(k) != new_flat.get(k))
    fixed = [k for k in changed if _never_changes(k)]
    needs = [k for k in changed if k not in FREE_TO_CHANGE and not _never_changes(k)]
    return needs, fixed


def describe_changes(keys: list[str], saved: dict[str, Any], new: dict[str, Any]) -> str:
    old_flat, new_flat = flatten(saved), flatten(new)
    return ", ".join(f"{k} (saved {json.dumps(old_flat.get(k))}, now {json.dumps(new_flat.get(k))})" for k in keys)


@contextmanager
def exclusive_run(run_dir: Path) -> Iterator[None]:
    """Hold ``RUN/.lock`` so a second trainer on the same RUN is refused.

    An advisory ``flock``: the kernel drops it when the holder exits in any way,
    ``kill -9`` included, so a stale lock never blocks a resume.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / ".lock", "a+")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise BigembedError(
                f"{run_dir}: is being trained by {holder}; wait for it or stop it before resuming"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


def append_stats(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one JSON line to ``RUN/stats.jsonl`` (after a crash a bucket's line may repeat)."""
    record = {"time": round(time.time(), 3), **record}
    with open(Path(run_dir) / "stats.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")


EVALS_FILE = "evals.json"


def read_evals(run_dir: Path) -> dict[str, Any]:
    """Validation history of a run: ``{"history": [...], "best": {...} | None, "early_stopped": bool}``."""
    path = Path(run_dir) / EVALS_FILE
    if not path.exists():
        return {"history": [], "best": None, "early_stopped": False}
    raw = read_json(path, "validation history")
    if not isinstance(raw, dict) or not isinstance(raw.get("history"), list):
        raise CheckpointError(f"{path}: malformed validation history; delete it to start the history afresh")
    return raw


def write_evals(run_dir: Path, evals: dict[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / EVALS_FILE, evals)
