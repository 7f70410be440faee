"""Three small C kernels, built on first use: the ranking loss's sparse gradients, row Adagrad
and the gather of a batch's rows.

After the first epoch only 2-5% of the ranking loss's hinges are active on the benchmark graph,
so the backward products of the fused step (two thirds of its flops) mostly multiply zeros.
Torch on the CPU has no fast way to act on so few entries (``nonzero`` alone cost as much as
the products), so ``native.c`` walks the hinges and updates only the rows of active ones. Its
row-wise Adagrad does in one pass what takes a dozen tensor operations (each a pass over the
batch's gradients); it and the gather prefetch the table rows they are about to touch.

It is compiled with the system's C compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``) for
this CPU, once, into a cache keyed by the source, compiler and CPU
(``$BIGEMBED_CACHE_DIR``, else ``$XDG_CACHE_HOME/bigembed``, else ``~/.cache/bigembed``), and
loaded through :mod:`ctypes`, which drops the interpreter lock during the call. Without a
compiler, or with ``BIGEMBED_NATIVE=0``, training takes the TorchScript kernels, which give the
same results up to float rounding.

Loading a library runs its code, so a cached one is loaded only when it can be trusted: the
sha256 recorded beside it when it was built (``native-<key>.json``) matches, and it, its record
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
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("native.c")
ABI = 3
FLAGS = ["-O3", "-fPIC", "-shared"]

_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL | None] = {}


def _cpu_key() -> str:
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


def _build_key(cc: str) -> str:
    """The cache key of a build: what the library depends on."""
    return hashlib.sha256(SOURCE.read_bytes() + f"{cc}|{FLAGS}|{_cpu_key()}".encode()).hexdigest()[:16]


def _cache_dir() -> Path:
    explicit = os.environ.get("BIGEMBED_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bigembed"


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc)
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _build(cc: str, out: Path) -> str:
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
            done = subprocess.run([cc, *FLAGS, *march, "-o", tmp, str(SOURCE)], capture_output=True, text=True,
                                  timeout=300)
            if done.returncode == 0:
                os.chmod(tmp, 0o755)
                digest = _sha256(Path(tmp))
                os.replace(tmp, out)
                _write_record(out, digest)
                return digest
            errors = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        raise OSError(f"{cc} could not compile {SOURCE}: {errors}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _record_path(library_path: Path) -> Path:
    return library_path.with_suffix(".json")


def _write_record(library_path: Path, digest: str) -> None:
    """Write the library's sha256 beside it, atomically."""
    record = _record_path(library_path)
    fd, tmp = tempfile.mkstemp(prefix=record.stem, suffix=".json.tmp", dir=record.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump({"sha256": digest, "abi": ABI}, handle)
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


def _cached_library(cc: str, key: str) -> ctypes.CDLL:
    """Load the cached build of ``key``, (re)building it first unless it can be trusted; in a
    private temporary folder when the cache folder is not private."""
    directory = _cache_dir()
    problem = _private_dir(directory)
    if problem:
        log.warning("not using the kernel cache (%s): building the C kernels in a private temporary folder",
                    problem)
        with tempfile.TemporaryDirectory(prefix="bigembed-native-") as tmp:
            path = Path(tmp) / f"native-{key}.so"
            _build(cc, path)
            return ctypes.CDLL(str(path))  # the loaded library stays mapped once its file is gone
    path = directory / f"native-{key}.so"
    problem = _untrusted(path)
    if problem:
        if path.exists() or _record_path(path).exists():
            log.warning("not loading the cached C kernels (%s): rebuilding them", problem)
        problem = _untrusted(path, _build(cc, path))
        if problem:
            raise OSError(f"just rebuilt, and still: {problem}")
    return ctypes.CDLL(str(path))


def library() -> ctypes.CDLL | None:
    """The compiled kernels, building them on first use; None where that is turned off or not
    possible (the reason is logged once)."""
    env = os.environ
    key = "|".join(env.get(k, "") for k in ("BIGEMBED_NATIVE", "CC", "BIGEMBED_CACHE_DIR", "XDG_CACHE_HOME", "PATH"))
    if key in _loaded:  # every batch asks: answer without the lock or the file system
        return _loaded[key]
    with _lock:
        if key in _loaded:
            return _loaded[key]
        if env.get("BIGEMBED_NATIVE", "1") == "0":
            _loaded[key] = None
            return None
        cc = _compiler()
        lib = None
        if cc is None:
            log.info("no C compiler found: training uses the TorchScript kernels")
        else:
            try:
                lib = _cached_library(cc, _build_key(cc))
                lib.bigembed_native_abi.restype = ctypes.c_int64
                if lib.bigembed_native_abi() != ABI:
                    raise OSError(f"{lib._name}: ABI {lib.bigembed_native_abi()}, expected {ABI}")
                fn = lib.bigembed_wide_ranking
                i64, ptr = ctypes.c_int64, ctypes.c_void_p
                fn.argtypes = [i64, i64, i64, i64, ptr, ptr, ptr, ctypes.c_float, ptr, ptr, ctypes.POINTER(i64)]
                fn.restype = ctypes.c_double
                ada = lib.bigembed_row_adagrad
                ada.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr, ctypes.c_float, ctypes.c_float]
                ada.restype = None
                lib.bigembed_gather.argtypes = [i64, i64, ptr, ptr, ptr]
                lib.bigembed_gather.restype = None
            except (OSError, subprocess.SubprocessError, AttributeError) as e:
                log.warning("the C kernels are unavailable, training uses the TorchScript kernels: %s", e)
                lib = None
        _loaded[key] = lib
        return lib


def wide_ranking(lib: ctypes.CDLL, margin: float, W: Tensor, S1: Tensor, Sl: Tensor, weight: Tensor, chunk: int,
                 U: int) -> tuple[Tensor, Tensor, int]:
    """The ranking loss's ``(loss, dW, active hinges)`` for the wide layout, from its scores
    ``S1`` (chunks, c, c + U) and ``Sl`` (chunks, c, U) (see
    :func:`~bigembed.trainer.kernels.wide_score_gradients`, which it equals up to rounding)."""
    B, d = weight.shape[0], W.shape[1]
    n = B // chunk
    tensors = (W, S1, Sl, weight)
    if any(t.dtype != torch.float32 or not t.is_contiguous() for t in tensors):
        raise ValueError("the native kernel takes contiguous float32 tensors")
    if S1.shape != (n, chunk, chunk + U) or Sl.shape != (n, chunk, U) or W.shape[0] != n * (chunk + 2 * U) + B:
        raise ValueError(f"shapes do not match the wide layout: W {tuple(W.shape)}, S1 {tuple(S1.shape)}, "
                         f"Sl {tuple(Sl.shape)}, {B} edges in chunks of {chunk}, {U} sampled")
    dW = torch.empty_like(W)
    active = ctypes.c_int64(0)
    total = lib.bigembed_wide_ranking(n, chunk, U, d, S1.data_ptr(), Sl.data_ptr(), weight.data_ptr(),
                                      margin, W.data_ptr(), dW.data_ptr(), ctypes.byref(active))
    if active.value < 0:
        raise MemoryError("the native ranking kernel could not allocate its scratch")
    return torch.tensor(total, dtype=torch.float32), dW, active.value


def _check_ids(index: Tensor, n: int) -> None:
    if index.shape[0]:
        low, high = (int(v) for v in torch.aminmax(index))
        if low < 0 or high >= n:  # C would read or write outside the table
            raise IndexError(f"row ids must lie in [0, {n}): got {low}..{high}")


def gather(lib: ctypes.CDLL, out: Tensor, table: Tensor, index: Tensor) -> None:
    """``out[:] = table[index]``: all contiguous, ``out`` (k, dim) and ``table`` (n, dim) float32,
    ``index`` (k,) int64."""
    n, d = table.shape
    if (table.dtype != torch.float32 or out.dtype != torch.float32 or index.dtype != torch.int64
            or not all(t.is_contiguous() for t in (table, out, index))):
        raise ValueError("the native gather takes contiguous float32 rows and int64 ids")
    if out.shape != (index.shape[0], d):
        raise ValueError(f"shapes do not match: out {tuple(out.shape)}, table {tuple(table.shape)}, "
                         f"{index.shape[0]} ids")
    _check_ids(index, n)
    lib.bigembed_gather(index.shape[0], d, index.data_ptr(), table.data_ptr(), out.data_ptr())


def row_adagrad(lib: ctypes.CDLL, table: Tensor, state: Tensor, slot: Tensor, index: Tensor, grad: Tensor,
                lr: float, max_norm: float) -> None:
    """Row-wise Adagrad (``state``: (n,)) on ``table[index]`` from ``grad``, which it overwrites;
    as :func:`~bigembed.trainer.kernels.row_adagrad` up to float rounding. All contiguous:
    ``table`` (n, dim) and ``grad`` (k, dim) float32, ``index`` (k,) int64 in ``[0, n)``,
    ``slot`` int32 scratch of at least n."""
    n, d = table.shape
    k = index.shape[0]
    if (table.dtype != torch.float32 or state.dtype != torch.float32 or grad.dtype != torch.float32
            or index.dtype != torch.int64 or slot.dtype != torch.int32
            or not all(t.is_contiguous() for t in (table, state, slot, index, grad))):
        raise ValueError("the native Adagrad takes contiguous float32 rows, int64 ids and int32 slots")
    if state.shape != (n,) or grad.shape != (k, d) or slot.shape[0] < n:
        raise ValueError(f"shapes do not match: table {tuple(table.shape)}, state {tuple(state.shape)}, "
                         f"grad {tuple(grad.shape)}, {k} ids, {slot.shape[0]} slots")
    _check_ids(index, n)
    lib.bigembed_row_adagrad(k, d, index.data_ptr(), grad.data_ptr(), table.data_ptr(), state.data_ptr(),
                             slot.data_ptr(), lr, max_norm)
