"""Atomic file and directory writes: temp name in the same folder, fsync, rename."""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bigembed.errors import BigembedError

log = logging.getLogger(__name__)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every file and folder below ``path`` (and ``path`` itself)."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(root))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BigembedError(f"{path}: cannot write ({exc.strerror or exc})") from None
    fsync_dir(path.parent)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def atomic_replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written, fsynced folder ``tmp`` to ``final`` (replacing it)."""
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` may exist on this machine (another user's, or one that cannot be
    asked about, counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temp_dirs(out: Path, what: str) -> list[Path]:
    """Remove the temp folders ``.OUT.WHAT-PID`` beside ``out`` left by killed runs; returns them.

    A folder whose PID is still alive (another run writing now, or a reused PID) is left alone.
    """
    pattern = re.compile(rf"\.{re.escape(out.name)}\.{re.escape(what)}-([0-9]+)")
    removed = []
    for entry in out.parent.glob(glob.escape(f".{out.name}.{what}-") + "*"):
        match = pattern.fullmatch(entry.name)
        if not match or not entry.is_dir() or entry.is_symlink():
            continue
        pid = int(match.group(1))
        if pid <= 0 or pid == os.getpid() or pid_alive(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        log.info("removed %s, left by an interrupted %s (process %d is gone)", entry, what, pid)
        removed.append(entry)
    return removed


@contextmanager
def atomic_output_dir(out: Path, what: str, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside ``out``; on success fsync it and rename it to ``out``.

    On any failure the temp folder is removed, so ``out`` is either the complete
    new output, the old one untouched, or absent. ``what`` names the job in errors.
    Temp folders of earlier runs for ``out`` that were killed (their PID is gone) are removed first.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise BigembedError(f"{out}: already exists (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_dirs(out, what)
    tmp = out.with_name(f".{out.name}.{what}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        atomic_replace_dir(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            reason = exc.strerror or exc
            raise BigembedError(f"{out}: {what} failed while writing ({reason}); nothing was kept") from None
        raise


def read_json(path: Path, what: str) -> Any:
    """Read a JSON file, raising a one-line error that names it when missing or damaged."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BigembedError(f"{path}: {what} not found") from None
    except (OSError, ValueError) as exc:
        raise BigembedError(f"{path}: {what} is damaged ({exc})") from None
