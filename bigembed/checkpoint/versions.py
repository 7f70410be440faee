"""Checkpoint versions in a RUN directory and the commit protocol.

Layout::

    RUN/CURRENT                         "v7": the last committed version
    RUN/checkpoints/v7/manifest.json    shard paths + sha256 + training position
    RUN/checkpoints/v7/emb_node_3.zarr  only the shards that changed since v6

Commit protocol: shards of the new version are written (each renamed into
place; all fsynced at the commit), then the version's manifest (temp file, fsync, rename), then
``CURRENT`` is replaced atomically. A crash at any instant leaves the previous
version whole; folders newer than ``CURRENT`` are uncommitted and removed on
the next start. Unchanged shards are referenced by path, never copied.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from bigembed.errors import BigembedError, CheckpointError
from bigembed.storage.atomic import atomic_write_bytes, atomic_write_json, fsync_dir, read_json
from bigembed.storage.shards import LOCAL_SHARDS, ShardStore

CHECKPOINT_FORMAT = "bigembed-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
_VERSION_DIR = re.compile(r"^v(\d+)$")
RETIRED_MANIFEST = "manifest.retired.json"  # a collected version's, kept for its referenced shards


@dataclass
class Position:
    """Where training stands: the next bucket to train is ``bucket`` of ``epoch`` (0-based),
    from its slab ``slab`` (0-based; > 0 when a commit fell inside the bucket)."""

    epoch: int = 0
    bucket: int = 0
    slab: int = 0

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.epoch, self.bucket, self.slab)


@dataclass
class VersionManifest:
    version: int
    parent: int | None
    shards: dict[str, dict[str, Any]]  # key -> {"path", "sha256", "shape"}
    position: Position
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "version": self.version,
            "parent": self.parent,
            "shards": self.shards,
            "position": {"epoch": self.position.epoch, "bucket": self.position.bucket,
                         "slab": self.position.slab},
            **self.extra,
        }

    @classmethod
    def from_json(cls, path: Path, raw: Any) -> VersionManifest:
        if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path}: not a bigembed checkpoint manifest")
        if raw.get("format_version") != CHECKPOINT_FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: checkpoint format_version {raw.get('format_version')} is not supported "
                f"(this bigembed reads {CHECKPOINT_FORMAT_VERSION})"
            )
        try:
            pos = raw["position"]
            known = {"format", "format_version", "version", "parent", "shards", "position"}
            manifest = cls(
                version=int(raw["version"]),
                parent=None if raw["parent"] is None else int(raw["parent"]),
                shards={str(k): _check_shard_entry(path, str(k), v) for k, v in dict(raw["shards"]).items()},
                position=Position(int(pos["epoch"]), int(pos["bucket"]), int(pos.get("slab", 0))),
                extra={k: v for k, v in raw.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{path}: manifest has a missing or malformed field ({exc})") from None
        if min(manifest.position.as_tuple()) < 0 or manifest.version < 0:
            raise CheckpointError(f"{path}: impossible training position {manifest.position.as_tuple()} "
                                  "(epoch, bucket, slab) or version: the manifest is damaged")
        return manifest


def _check_shard_entry(path: Path, key: str, entry: Any) -> dict[str, Any]:
    """A manifest's shard entry, checked: a relative path that stays inside the RUN (no ``..``,
    not absolute), a sha256 and a shape of non-negative integers."""
    if not isinstance(entry, dict):
        raise ValueError(f"shard {key!r} is not an object")
    where = entry["path"]
    parts = PurePosixPath(where).parts if isinstance(where, str) else ()
    if not parts or where.startswith(("/", "\\")) or ".." in parts or "\\" in where or ":" in parts[0]:
        raise CheckpointError(f"{path}: shard {key!r} has path {where!r}, which leaves the RUN directory; "
                              "refusing to read it (the manifest is damaged or was tampered with)")
    checksum, shape = entry["sha256"], entry["shape"]
    if checksum is not None and not (isinstance(checksum, str) and re.fullmatch(r"[0-9a-f]{64}", checksum)):
        raise ValueError(f"shard {key!r} has a malformed sha256")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ValueError(f"shard {key!r} has a malformed shape {shape!r}")
    return entry


def version_dir(run_dir: Path, version: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"v{version}"


def list_versions(run_dir: Path) -> list[int]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(int(m.group(1)) for p in root.iterdir() if (m := _VERSION_DIR.match(p.name)))


def read_current(run_dir: Path) -> int | None:
    """The committed version named by ``CURRENT``, or None when there is none."""
    path = Path(run_dir) / "CURRENT"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, expected a file naming a version like 'v3'") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not UTF-8 text, expected a version like 'v3'") from None
    m = _VERSION_DIR.match(text)
    if not m:
        raise CheckpointError(f"{path}: expected a version like 'v3', got {text[:40]!r}")
    return int(m.group(1))


def read_manifest(run_dir: Path, version: int) -> VersionManifest:
    path = version_dir(run_dir, version) / "manifest.json"
    try:
        raw = read_json(path, "checkpoint manifest")
    except BigembedError as exc:
        raise CheckpointError(str(exc)) from None
    manifest = VersionManifest.from_json(path, raw)
    if manifest.version != version:
        raise CheckpointError(f"{path}: manifest says version {manifest.version}, but it is in v{version}'s folder")
    return manifest


def shard_location(run_dir: Path, manifest: VersionManifest, key: str) -> Path:
    """Where shard ``key`` of ``manifest`` lives, refusing a path that resolves outside the RUN
    (through a symbolic link, say): a manifest never sends a reader elsewhere."""
    try:
        entry = manifest.shards[key]
    except KeyError:
        raise CheckpointError(f"v{manifest.version}: manifest lists no shard {key!r}") from None
    root = Path(run_dir).resolve()
    where = (root / entry["path"]).resolve()
    if not where.is_relative_to(root):
        raise CheckpointError(f"v{manifest.version}: shard {key!r} at {entry['path']!r} resolves to {where}, "
                              f"outside the RUN {root}; refusing to read it")
    return Path(run_dir) / entry["path"]


def read_shard_of(run_dir: Path, manifest: VersionManifest, key: str, out: np.ndarray | None = None,
                  store: ShardStore = LOCAL_SHARDS) -> np.ndarray:
    """Read and verify one shard listed in ``manifest`` (into ``out`` where it fits)."""
    where = shard_location(run_dir, manifest, key)
    entry = manifest.shards[key]
    return store.read(where, entry["sha256"], tuple(entry["shape"]), out)


def verify_version(run_dir: Path, manifest: VersionManifest) -> None:
    """Read every shard of ``manifest`` once, checking shape and checksum (one at a time)."""
    for key in manifest.shards:
        read_shard_of(run_dir, manifest, key)


def check_position(run_dir: Path, manifest: VersionManifest, visits: int) -> None:
    """Refuse a manifest whose bucket lies past the ``visits`` bucket visits of an epoch
    (P x P x ``training.edge_chunks``): such a manifest is damaged, whatever its checksums say."""
    if manifest.position.bucket >= visits:
        pos = manifest.position
        raise CheckpointError(
            f"{version_dir(run_dir, manifest.version)}/manifest.json: impossible training position "
            f"(epoch {pos.epoch}, bucket {pos.bucket}, slab {pos.slab}) for {visits} buckets an epoch")


def epoch_progress(run_dir: Path, manifest: VersionManifest, visits: int) -> tuple[set[int], dict[int, int]]:
    """Visits of the position's epoch after its next one that are already trained (``done``)
    or partly trained (``partial``: visit -> slabs done): several ranks commit with visits
    finished out of order. Empty for a single trainer's positions. Checked against the
    epoch's ``visits``."""
    raw_done, raw_partial = manifest.extra.get("visits_done", []), manifest.extra.get("visits_partial", {})
    path = version_dir(run_dir, manifest.version) / "manifest.json"
    try:
        done = {int(i) for i in raw_done}
        partial = {int(i): int(s) for i, s in dict(raw_partial).items()}
    except (TypeError, ValueError, AttributeError):
        raise CheckpointError(f"{path}: malformed visits_done or visits_partial (the manifest is damaged)") from None
    first = manifest.position.bucket
    bad = [i for i in [*done, *partial] if not first < i < visits] + [s for s in partial.values() if s <= 0]
    if bad or done & set(partial):
        raise CheckpointError(f"{path}: impossible visits_done/visits_partial {sorted(bad or done & set(partial))} "
                              f"(the epoch has {visits} visits; the next is {first}): the manifest is damaged")
    return done, partial


def committed_versions(run_dir: Path) -> list[int]:
    """Versions whose folder holds a manifest (complete commits, or damaged ones), oldest first."""
    return [v for v in list_versions(run_dir) if (version_dir(run_dir, v) / "manifest.json").is_file()]


def load_good_version(run_dir: Path, warn: Callable[[str], None],
                      check: Callable[[VersionManifest], None] | None = None) -> VersionManifest:
    """The version to resume from: ``CURRENT``'s if its manifest and every shard verify (and
    ``check(manifest)`` passes), else the newest version that does, saying why.

    When ``CURRENT`` is readable, versions newer than it were never committed and are not
    considered; when it is missing, unreadable or names a version that is gone, every
    version is. Nothing is deleted here.
    """
    problems: list[str] = []
    try:
        current = read_current(run_dir)
    except CheckpointError as exc:
        current = None
        problems.append(str(exc))
    versions = sorted(committed_versions(run_dir), reverse=True)
    if current is None and not problems:
        problems.append(f"{Path(run_dir) / 'CURRENT'}: missing")
    elif current is not None and current in versions:
        versions = [current] + [v for v in versions if v < current]
    elif current is not None:
        problems.append(f"{Path(run_dir) / 'CURRENT'}: names v{current}, which does not exist")
    for trying in versions:
        try:
            manifest = read_manifest(run_dir, trying)
            if check is not None:
                check(manifest)
            verify_version(run_dir, manifest)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        if problems:
            warn(f"warning: {problems[0]}; falling back to v{trying}, "
                 "the newest version whose manifest and shards verify")
        return manifest
    if not problems:
        raise CheckpointError(f"{run_dir}: no committed checkpoint")
    raise CheckpointError(f"{problems[0]} (and no other version is intact)")


def remove_uncommitted(run_dir: Path) -> None:
    """Delete what an interrupted commit leaves: version folders without a manifest newer than
    every version with one (a version is staged under a number past all others, see
    :func:`next_version`) and hidden temp entries. Older folders without a manifest hold
    shards that kept versions still use (see :func:`collect_garbage`): left alone."""
    newest = max(committed_versions(run_dir), default=-1)
    for v in list_versions(run_dir):
        folder = version_dir(run_dir, v)
        if v > newest and not (folder / "manifest.json").exists():
            shutil.rmtree(folder, ignore_errors=True)
    for tmp in (Path(run_dir) / "checkpoints").glob(".*"):
        shutil.rmtree(tmp, ignore_errors=True)
    for tmp in Path(run_dir).glob(".*.tmp-*"):  # a half-written CURRENT, config.json or evals.json
        tmp.unlink(missing_ok=True)  # (the caller holds the RUN's lock: no other writer is at work)


def next_version(run_dir: Path) -> int:
    """The number of the next version: past every folder there is, so a number is never
    reused (a reader that pinned ``v7`` never meets another ``v7``)."""
    return max(list_versions(run_dir), default=-1) + 1


class VersionWriter:
    """Stages version ``base.version + 1`` (or a fresh v0) and commits it.

    Shards written here replace the base's entries; all others are referenced.
    """

    def __init__(self, run_dir: Path, base: VersionManifest | None, version: int,
                 trusted: set[str] | None = None, store: ShardStore = LOCAL_SHARDS) -> None:
        self.run_dir = Path(run_dir)
        self.store = store  # where the shards are kept (:class:`~bigembed.storage.shards.ShardStore`)
        self.base = base
        self.version = version
        self.folder = version_dir(run_dir, version)
        self.written: dict[str, dict[str, Any]] = {}
        # shard paths whose bytes this session already knows good: verified when the run was
        # resumed, or written (and hashed) by this session; read back without hashing again
        self.trusted: set[str] = set() if trusted is None else trusted

    def successor(self, committed: VersionManifest) -> VersionWriter:
        """The writer of the version after ``committed`` (what :meth:`commit` returned),
        trusting what this one trusted and wrote."""
        return VersionWriter(self.run_dir, committed, committed.version + 1,
                             self.trusted | {entry["path"] for entry in self.written.values()}, self.store)

    def shard_path(self, key: str) -> Path:
        return self.folder / (key.replace("/", "_") + self.store.suffix)

    def write(self, key: str, array: np.ndarray, hash_now: bool = True) -> None:
        """Stage ``key``; it is made durable at :meth:`commit` (a partition evicted and
        reloaded several times before a commit is synced once). ``hash_now=False`` leaves
        the checksum to :meth:`commit`, which then hashes only the last copy written (a
        partition evicted four times an epoch is hashed once; the hashing was CPU time
        taken from training on a 2-core machine). A key staged again is rewritten in place
        (:meth:`~bigembed.storage.shards.ShardStore.overwrite`): no committed version refers to
        it, and an interrupted session's staged version is deleted when the run resumes."""
        path = self.shard_path(key)
        self.folder.mkdir(parents=True, exist_ok=True)
        done = False
        if key in self.written:  # staged before in this version, referenced by nothing yet: rewrite in place
            done, checksum = self.store.overwrite(path, array, checksum=hash_now)
        if not done:
            checksum = self.store.write(path, array, durable=False, checksum=hash_now)
        self.written[key] = {
            "path": str(path.relative_to(self.run_dir)),
            "sha256": checksum,
            "shape": list(array.shape),
        }

    def read(self, key: str, out: np.ndarray | None = None) -> np.ndarray:
        """The newest copy of ``key``: staged here, else the base version's (read into ``out``
        where it fits, see :meth:`~bigembed.storage.shards.ShardStore.read`)."""
        if key in self.written:  # staged by this writer: hashed as it was written, so not again
            # (the checksum in the manifest still guards it from the next session on)
            entry = self.written[key]
            return self.store.read(self.run_dir / entry["path"], None, tuple(entry["shape"]), out)
        if self.base is None:
            raise CheckpointError(f"no shard {key!r} staged and no base version")
        known = self.base.shards.get(key)
        if known is not None and known["path"] in self.trusted:
            return self.store.read(self.run_dir / known["path"], None, tuple(known["shape"]), out)
        return read_shard_of(self.run_dir, self.base, key, out, self.store)

    def commit(self, position: Position, extra: dict[str, Any]) -> VersionManifest:
        for entry in self.written.values():
            if entry["sha256"] is None:  # staged with hash_now=False: hash the copy that stays
                entry["sha256"] = self.store.checksum(self.run_dir / entry["path"], tuple(entry["shape"]))
        shards = dict(self.base.shards) if self.base else {}
        shards.update(self.written)
        manifest = VersionManifest(
            version=self.version,
            parent=self.base.version if self.base else None,
            shards=shards,
            position=Position(position.epoch, position.bucket, position.slab),
            extra=extra,
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        for entry in self.written.values():
            self.store.sync(self.run_dir / entry["path"])
        atomic_write_json(self.folder / "manifest.json", manifest.to_json())
        fsync_dir(self.folder.parent)
        atomic_write_bytes(self.run_dir / "CURRENT", f"v{self.version}\n".encode())
        return manifest


def collect_garbage(run_dir: Path, current: VersionManifest, keep: int, pinned: tuple[int, ...] = ()) -> list[int]:
    """Delete versions not among the newest ``keep`` of ``current``'s parent chain, nor
    ``pinned``, nor pinned by a running reader (:mod:`bigembed.checkpoint.pins`).

    A folder survives while any kept manifest references a shard inside it.
    Returns the versions deleted.
    """
    from bigembed.checkpoint.pins import gc_lock, live_pins

    with gc_lock(run_dir):
        kept: list[VersionManifest] = [current]
        while len(kept) < keep and kept[-1].parent is not None:
            try:
                kept.append(read_manifest(run_dir, kept[-1].parent))
            except CheckpointError:
                break
        for v in set(pinned) | live_pins(run_dir):
            if v != current.version:
                try:
                    kept.append(read_manifest(run_dir, v))
                except CheckpointError:
                    pass
        needed = {m.version for m in kept}
        for m in kept:
            for entry in m.shards.values():
                match = re.match(r"checkpoints/v(\d+)/", entry["path"])
                if match:
                    needed.add(int(match.group(1)))
        kept_versions = {m.version for m in kept}
        for doomed in (Path(run_dir) / "checkpoints").glob(".v*.deleting"):  # an earlier deletion, killed
            shutil.rmtree(doomed, ignore_errors=True)
        deleted = []
        for v in list_versions(run_dir):
            if v < current.version and v not in needed:
                _delete_version(run_dir, v)
                deleted.append(v)
            elif v < current.version and v not in kept_versions:
                _retire(run_dir, v)
    return deleted


def _delete_version(run_dir: Path, version: int) -> None:
    """Delete a version's folder: renamed out of the list of versions first (atomic), so a kill
    in the middle of the deletion leaves a hidden folder that the next start removes
    (:func:`remove_uncommitted`), never a version with some of its shards gone."""
    folder = version_dir(run_dir, version)
    doomed = folder.with_name(f".{folder.name}.deleting")
    try:
        os.replace(folder, doomed)
    except FileNotFoundError:
        return
    except OSError:  # e.g. a leftover of an earlier kill in the way: delete it in place
        doomed = folder
    shutil.rmtree(doomed, ignore_errors=True)


def _retire(run_dir: Path, version: int) -> None:
    """Take a collected version's manifest out of the list of versions: its folder stays only
    for shards that kept versions reference, while shards it referenced in older folders may
    be gone, so the manifest would no longer verify."""
    manifest = version_dir(run_dir, version) / "manifest.json"
    try:
        manifest.rename(manifest.with_name(RETIRED_MANIFEST))
    except FileNotFoundError:
        pass


def emb_key(entity: str, partition: int) -> str:
    return f"emb/{entity}/{partition}"


def adagrad_key(entity: str, partition: int) -> str:
    return f"adagrad/{entity}/{partition}"


RELATION_PARAMS_KEY = "relations/params"
RELATION_ADAGRAD_KEY = "relations/adagrad"
# ``model.global_emb``: one vector per entity type, (types, dim) float32, and its Adagrad state
GLOBAL_EMB_KEY = "relations/global_emb"
GLOBAL_ADAGRAD_KEY = "relations/global_adagrad"
