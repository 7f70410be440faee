"""Entity names per partition (local offset -> original id), as mmap-ninja string memmaps."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from mmap_ninja.string import StringsMmap

from bigembed.errors import DataLayoutError
from bigembed.storage.edges import append_column


def names_dir(data_dir: Path, entity: str, partition: int) -> Path:
    return Path(data_dir) / "entities" / entity / str(partition) / "names"


def write_names(folder: Path, names: Sequence[str]) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    if len(names) == 0:
        folder.mkdir(exist_ok=True)
        return
    StringsMmap.from_strings(folder, list(names))


def iter_names(folder: Path, count: int, chunk: int = 65536) -> Iterator[list[str]]:
    """Yield the names of a partition in offset order, ``chunk`` at a time."""
    if count == 0:
        return
    try:
        strings = StringsMmap(folder, mode="rb")
        total = len(strings)
    except (OSError, ValueError, TypeError) as exc:
        raise DataLayoutError(f"{folder}: cannot open entity names ({exc})") from None
    if total != count:
        raise DataLayoutError(f"{folder}: expected {count} names as the manifest says, got {total}")
    for start in range(0, count, chunk):
        yield strings[start : min(start + chunk, count)]


def write_names_arrow(folder: Path, batches: Iterator[Any]) -> int:
    """Write names given as Arrow string arrays, batch by batch, in the layout
    :func:`write_names` gives (mmap-ninja strings: the UTF-8 bytes end to end in ``data.ninja``,
    each name's ``starts``/``ends``), without making a Python string of each name.
    Returns how many names were written."""
    import pyarrow as pa

    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    size = 0
    with open(folder / "data.ninja", "wb") as data:
        for batch in batches:
            array = batch.cast(pa.large_string()) if batch.type != pa.large_string() else batch
            if len(array) == 0:
                continue
            offsets = np.frombuffer(array.buffers()[1], np.int64)[array.offset : array.offset + len(array) + 1]
            body = array.buffers()[2]
            data.write(memoryview(body)[int(offsets[0]) : int(offsets[-1])])
            starts = offsets[:-1] - offsets[0] + size
            ends = offsets[1:] - offsets[0] + size
            append_column(folder / "starts", starts)
            append_column(folder / "ends", ends)
            size += int(offsets[-1] - offsets[0])
            written += len(array)
    if written:
        (folder / "type.ninja").write_text("string")
    else:
        (folder / "data.ninja").unlink()
    return written
