"""C sources compiled on first use with the system's compiler, cached, and loaded only when trusted.

Each source (the training kernels, the import's node dictionary) is compiled with ``$CC``, else
``cc``, ``gcc`` or ``clang``, for this CPU, once, into a cache keyed by the source, compiler,
flags and CPU (``$BIGEMBED_CACHE_DIR``, else ``$XDG_CACHE_HOME/bigembed``, else
``~/.cache/bigembed``), and loaded through :mod:`ctypes`, which drops the interpreter lock during
each call.

Loading a library runs its code, so a cached one is loaded only when it can be trusted: the
sha256 recorded beside it when it was built (``<stem>-<key>.json``) matches, and it, its record
and the cache folder are owned by this user (or root) and writable by no one else. Otherwise it
is rebuilt (into a fresh file renamed over it) rather than loaded; when the folder itself is not
private, the library is built in a private temporary folder for this process only.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

FLAGS = ["-O3", "-fPIC", "-shared"]


@dataclass(frozen=True)
class CSource:
    """One C file built into its own library: ``stem`` names the cached files, ``abi`` is what
    the record says and the library's own ABI function (``bigembed_<stem>_abi``) must answer,
    ``log`` gets the warnings, ``fallback`` says what runs instead when it cannot be loaded."""

    path: Path
    stem: str
    abi: int
    log: logging.Logger
    fallback: str


# What a load depends on: a change to any of these (tests set them) loads afresh.
ENV_KEYS = ("BIGEMBED_NATIVE", "CC", "BIGEMBED_CACHE_DIR", "XDG_CACHE_HOME", "PATH")
_lock = threading.Lock()


Loaded = dict[str, tuple[ctypes.CDLL | None, str]]  # by the environment: (library or None, why)


def load(source: CSource, loaded: Loaded, declare: Callable[[ctypes.CDLL], None]) -> ctypes.CDLL | None:
    """``source``'s library (:func:`load_explained`), or None."""
    return load_explained(source, loaded, declare)[0]


def load_explained(source: CSource, loaded: Loaded,
                   declare: Callable[[ctypes.CDLL], None]) -> tuple[ctypes.CDLL | None, str]:
    """``source``'s library, built on first use and remembered in ``loaded`` (by the
    environment it depends on), with its functions' types set by ``declare``, and how it was
    had ("built and cached in DIR", "loaded from the cache DIR"); None where
    ``BIGEMBED_NATIVE=0``, no compiler is found or the build fails, with the reason (said
    once on its log too)."""
    env = os.environ
    key = "|".join(env.get(k, "") for k in ENV_KEYS)
    if key in loaded:
        return loaded[key]
    with _lock:
        if key in loaded:
            return loaded[key]
        lib, why = None, "BIGEMBED_NATIVE=0 is set"
        if env.get("BIGEMBED_NATIVE", "1") != "0":
            cc = compiler()
            if cc is None:
                why = "no C compiler found (cc, gcc or clang on the PATH, or $CC)"
                source.log.info("%s: %s", why, source.fallback)
            else:
                try:
                    lib, why = cached_library(source, cc)
                    abi = getattr(lib, f"bigembed_{source.stem}_abi")
                    abi.restype = ctypes.c_int64
                    if abi() != source.abi:
                        raise OSError(f"{lib._name}: ABI {abi()}, expected {source.abi}")
                    declare(lib)
                except (OSError, subprocess.SubprocessError, AttributeError) as e:
                    source.log.warning("%s is unavailable, %s: %s", source.path.name, source.fallback, e)
                    lib, why = None, f"{source.path.name} could not be built or loaded ({e})"
        loaded[key] = (lib, why)
        return lib, why


def cpu_key() -> str:
    """What the build depends on besides the source: the machine and its instruction sets."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()} {flags}"


def build_key(source: CSource, cc: str) -> str:
    """The cache key of a build: what the library depends on."""
    return hashlib.sha256(source.path.read_bytes() + f"{cc}|{FLAGS}|{cpu_key()}".encode()).hexdigest()[:16]


def cache_dir() -> Path:
    explicit = os.environ.get("BIGEMBED_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bigembed"


def compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc)
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None


def build(source: CSource, cc: str, out: Path) -> str:
    """Compile into a temporary file beside ``out``, record its sha256 (:func:`_record_path`)
    and rename it into place, so a reader never sees half a library and racing processes both
    end with a whole one. Tries ``-march=native`` first, then the compiler's default target.
    Returns the sha256."""
    out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.stem, suffix=".so.tmp", dir=out.parent)
    os.close(fd)
    try:
        errors = ""
        for march in (["-march=native"], []):
            done = subprocess.run([cc, *FLAGS, *march, "-o", tmp, str(source.path)], capture_output=True, text=True,
                                  timeout=300)
            if done.returncode == 0:
                os.chmod(tmp, 0o755)
                digest = _sha256(Path(tmp))
                os.replace(tmp, out)
                _write_record(out, digest, source.abi)
                return digest
            errors = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        raise OSError(f"{cc} could not compile {source.path}: {errors}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _record_path(library_path: Path) -> Path:
    return library_path.with_suffix(".json")


def _write_record(library_path: Path, digest: str, abi: int) -> None:
    """Write the library's sha256 beside it, atomically."""
    record = _record_path(library_path)
    fd, tmp = tempfile.mkstemp(prefix=record.stem, suffix=".json.tmp", dir=record.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump({"sha256": digest, "abi": abi}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, record)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _unsafe(path: Path, st: os.stat_result) -> str | None:
    """Why ``path`` (stat ``st``) could have been written by someone else, or None."""
    uid = os.getuid() if hasattr(os, "getuid") else st.st_uid
    if st.st_uid not in (uid, 0):
        return f"{path} is owned by uid {st.st_uid}, not by this user (uid {uid}) or root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} is writable by its group or by others (mode {stat.filemode(st.st_mode)})"
    return None


def _private_dir(directory: Path) -> str | None:
    """Why libraries in ``directory`` (created if missing) cannot be trusted, or None."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return _unsafe(directory, os.stat(directory))
    except OSError as e:
        return f"{directory}: cannot use it ({e.strerror or e})"


def _untrusted(path: Path, built: str | None = None) -> str | None:
    """Why the library ``path`` must not be loaded, or None: it and its record must be regular
    files that only this user (or root) can write, and its sha256 must be the recorded one
    (or ``built``, the one this process just built, should another process have replaced the
    record meanwhile)."""
    record = _record_path(path)
    for file in (path, record):
        try:
            st = os.lstat(file)
        except FileNotFoundError:
            return f"{file} is missing"
        if not stat.S_ISREG(st.st_mode):
            return f"{file} is not a regular file"
        problem = _unsafe(file, st)
        if problem:
            return problem
    try:
        recorded = json.loads(record.read_text())["sha256"]
    except (ValueError, KeyError, TypeError) as e:
        return f"{record} is damaged ({e})"
    digest = _sha256(path)
    if digest not in (recorded, built):
        return f"{path}: sha256 {digest[:12]}... differs from the {recorded[:12]}... recorded when it was built"
    return None


def cached_library(source: CSource, cc: str) -> tuple[ctypes.CDLL, str]:
    """Load the cached build of ``key``, (re)building it first unless it can be trusted; in a
    private temporary folder when the cache folder is not private. Returns it and how it was had."""
    key = build_key(source, cc)
    directory = cache_dir()
    problem = _private_dir(directory)
    if problem:
        source.log.warning("not using the kernel cache (%s): building %s in a private temporary folder",
                           problem, source.path.name)
        with tempfile.TemporaryDirectory(prefix=f"bigembed-{source.stem}-") as tmp:
            path = Path(tmp) / f"{source.stem}-{key}.so"
            build(source, cc, path)
            # the loaded library stays mapped once its file is gone
            return ctypes.CDLL(str(path)), f"built with {cc} for this process ({problem})"
    path = directory / f"{source.stem}-{key}.so"
    problem = _untrusted(path)
    how = f"loaded from the cache {directory}"
    if problem:
        if path.exists() or _record_path(path).exists():
            source.log.warning("not loading the cached %s (%s): rebuilding it", path.name, problem)
        problem = _untrusted(path, build(source, cc, path))
        if problem:
            raise OSError(f"just rebuilt, and still: {problem}")
        how = f"built with {cc} and cached in {directory}"
    return ctypes.CDLL(str(path)), how
