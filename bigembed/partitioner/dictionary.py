"""The import's node dictionary in memory: (entity type, name) -> id in first-seen order, in C.

String ids are looked up a block at a time (``dictionary.c``: one open-addressing table whose
slots hold each name's hash and first bytes, names compared in full so two names never merge),
and each block's edges go to a spool as ids; the ranks that place nodes in partitions are
computed once at the end from the distinct names alone. It takes about 60-100 bytes a node
plus its name, against DuckDB's join of every edge back to its nodes by name; the import
moves to DuckDB (:mod:`bigembed.partitioner.engine`) when the dictionary would outgrow its share
of the budget, and uses DuckDB throughout where no C compiler is found.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from bigembed import cbuild

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("dictionary.c")
ABI = 2
_SOURCE = cbuild.CSource(SOURCE, "dictionary", ABI, log, "the import keeps its node dictionary in DuckDB")
# Bits of each name's hash kept; tests set 0 so that every name hashes alike.
HASH_MASK = 2**64 - 1
MAX_TYPES = 1 << 16  # the slot keeps a node's entity type in 16 bits

_loaded: cbuild.Loaded = {}


def _declare(lib: ctypes.CDLL) -> None:
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.bigembed_dict_new.argtypes = [i64, ctypes.c_uint64]
    lib.bigembed_dict_new.restype = ptr
    lib.bigembed_dict_free.argtypes = [ptr]
    lib.bigembed_dict_free.restype = None
    for name in ("count", "bytes"):
        getattr(lib, f"bigembed_dict_{name}").argtypes = [ptr]
        getattr(lib, f"bigembed_dict_{name}").restype = i64
    lib.bigembed_dict_memory_after.argtypes = [ptr, i64]
    lib.bigembed_dict_memory_after.restype = i64
    lib.bigembed_dict_intern.argtypes = [ptr, i64, ptr, ctypes.c_int, ptr, ptr, ctypes.c_int32, ptr]
    lib.bigembed_dict_intern.restype = ctypes.c_int
    lib.bigembed_dict_export.argtypes = [ptr, ptr, ptr, ptr]
    lib.bigembed_dict_export.restype = None


def library() -> ctypes.CDLL | None:
    """The compiled dictionary, built on first use; None without a working C compiler or with
    ``BIGEMBED_NATIVE=0`` (the import then keeps its dictionary in DuckDB)."""
    return cbuild.load(_SOURCE, _loaded, _declare)


class NameDictionary:
    """Distinct (entity type, name) pairs, each given the next id (0, 1, ...) when first seen."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        self._d = lib.bigembed_dict_new(0, HASH_MASK)
        if not self._d:
            raise MemoryError("could not allocate the node dictionary")

    def close(self) -> None:
        if self._d:
            self._lib.bigembed_dict_free(self._d)
            self._d = None

    def __del__(self) -> None:
        self.close()

    def __len__(self) -> int:
        return int(self._lib.bigembed_dict_count(self._d))

    def memory(self, adding: int = 0) -> int:
        """Bytes it would hold with ``adding`` more names (the slot table grows by doubling)."""
        return int(self._lib.bigembed_dict_memory_after(self._d, adding))

    def intern(self, names: pa.Array, types: np.ndarray | None = None, type_const: int = 0) -> np.ndarray:
        """The id (uint32) of each of ``names`` (a string or large_string array without nulls), of
        entity type ``types[i]`` (int32) or ``type_const`` for all; new ones are added."""
        if isinstance(names, pa.ChunkedArray):
            names = names.combine_chunks()
        if names.type == pa.large_string():
            wide, width = 1, 8
        elif names.type == pa.string():
            wide, width = 0, 4
        else:
            names, wide, width = names.cast(pa.large_string()), 1, 8
        n = len(names)
        out = np.empty(n, np.uint32)
        if n == 0:
            return out
        buffers = names.buffers()
        offsets = buffers[1].address + width * names.offset
        data = buffers[2].address if buffers[2] is not None else offsets  # all names empty: no bytes are read
        if types is not None:
            types = np.ascontiguousarray(types, np.int32)
        rc = self._lib.bigembed_dict_intern(self._d, n, offsets, wide, data,
                                            None if types is None else types.ctypes.data, int(type_const),
                                            out.ctypes.data)
        if rc == -1:
            raise MemoryError(f"the node dictionary could not grow past {len(self)} names")
        if rc == -2:
            raise OverflowError(f"more than {2**32 - 2} distinct nodes")
        return out

    def export(self) -> tuple[pa.LargeStringArray, np.ndarray]:
        """Every name in id order, as one Arrow array, and its entity type (int32)."""
        count = len(self)
        starts = np.empty(count + 1, np.int64)
        body = np.empty(max(1, int(self._lib.bigembed_dict_bytes(self._d))), np.uint8)
        types = np.empty(count, np.int32)
        self._lib.bigembed_dict_export(self._d, starts.ctypes.data, body.ctypes.data, types.ctypes.data)
        array = pa.LargeStringArray.from_buffers(count, pa.py_buffer(starts), pa.py_buffer(body))
        return array, types
