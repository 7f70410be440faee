"""Read pins: a reader (eval, export) pins the version it reads, and garbage collection
keeps every version that a live reader has pinned.

A pin is a file ``RUN/pins/<pid>-<n>.pin`` naming the version, on which the reader holds
a shared ``flock`` for as long as it reads. The kernel drops the lock when the reader
exits in any way (``kill -9`` included), so a pin whose file can be locked exclusively
is stale and is removed by the next garbage collection. ``RUN/pins/.lock`` orders the
two sides: a reader creates its pin and checks that the version still exists while
holding it, and garbage collection holds it from reading the pins until it has
deleted what it deletes, so a version is never removed between being chosen and
being pinned.

Example::

    with pin_version(run, 7):          # v7 stays on disk while this block reads it
        evaluate(...)
    with gc_lock(run):                 # the collector's side
        keep |= live_pins(run)
"""

from __future__ import annotations

import fcntl
import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bigembed.errors import CheckpointError

PIN_DIR = "pins"
_counter = itertools.count()


def _pin_dir(run_dir: Path) -> Path:
    return Path(run_dir) / PIN_DIR


@contextmanager
def gc_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``RUN/pins/.lock`` exclusively (nothing happens when the RUN is read-only: then
    no one can collect garbage in it either)."""
    folder = _pin_dir(run_dir)
    try:
        folder.mkdir(exist_ok=True)
        handle = open(folder / ".lock", "a+")
    except OSError:
        yield
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        handle.close()


def live_pins(run_dir: Path) -> set[int]:
    """Versions pinned by readers still running; stale pins are removed. Call under :func:`gc_lock`."""
    folder = _pin_dir(run_dir)
    if not folder.is_dir():
        return set()
    pinned: set[int] = set()
    for path in folder.glob("*.pin"):
        try:
            handle = open(path, "r+")
        except OSError:
            continue
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a reader holds it: honour the pin
                try:
                    pinned.add(int(handle.read().strip().removeprefix("v")))
                except ValueError:
                    pass
                continue
            path.unlink(missing_ok=True)  # its reader is gone
    return pinned


@contextmanager
def pin_version(run_dir: Path, version: int) -> Iterator[None]:
    """Keep ``version`` of ``run_dir`` from garbage collection while the block runs.

    Raises :class:`CheckpointError` if the version is not (or no longer) on disk. A RUN
    that cannot be written to is read without a pin (no trainer can delete from it).
    """
    from bigembed.checkpoint.versions import committed_versions, version_dir

    folder = _pin_dir(run_dir)
    handle = None
    with gc_lock(run_dir):
        if not (version_dir(run_dir, version) / "manifest.json").is_file():
            have = ", ".join(f"v{v}" for v in committed_versions(run_dir)) or "none"
            raise CheckpointError(f"{run_dir}: version v{version} does not exist (committed versions: {have})")
        path = folder / f"{os.getpid()}-{next(_counter)}.pin"
        try:
            handle = open(path, "w")
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
            handle.write(f"v{version}\n")
            handle.flush()
        except OSError:
            if handle is not None:
                handle.close()
            handle = None
    try:
        yield
    finally:
        if handle is not None:
            path.unlink(missing_ok=True)
            handle.close()
