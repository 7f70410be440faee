"""Entity names per partition (local offset -> original id), as mmap-ninja string memmaps."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from mmap_ninja.string import StringsMmap

from bigembed.errors import DataLayoutError


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
