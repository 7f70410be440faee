"""Streaming edge-list reader: TSV/CSV, optionally gzipped, read in fixed-size chunks.

Memory is bounded by the chunk size, never by the file's length. Every parse
error names the file and the 1-based line number.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from bigembed.errors import InputFormatError

ROLES = ("lhs", "rel", "rhs")


@dataclass(frozen=True)
class ColumnSpec:
    """Where lhs, rhs and (optionally) rel sit in a line; ``rel`` is None for one relation."""

    lhs: int
    rhs: int
    rel: int | None
    width: int

    @classmethod
    def parse(cls, text: str) -> "ColumnSpec":
        names = [n.strip() for n in text.split(",")]
        positions: dict[str, int] = {}
        for i, name in enumerate(names):
            if name in ("_", ""):
                continue
            if name not in ROLES:
                raise InputFormatError(
                    f"--columns {text!r}: unknown column {name!r} (use lhs, rel, rhs or _ to skip)"
                )
            if name in positions:
                raise InputFormatError(f"--columns {text!r}: column {name!r} given twice")
            positions[name] = i
        if "lhs" not in positions or "rhs" not in positions:
            raise InputFormatError(f"--columns {text!r}: must name both lhs and rhs")
        return cls(positions["lhs"], positions["rhs"], positions.get("rel"), max(positions.values()) + 1)


@dataclass(frozen=True)
class EdgeChunk:
    """Parsed lines: parallel lists of raw lhs/rel/rhs tokens (rel is None for one relation)."""

    lhs: list[str]
    rhs: list[str]
    rel: list[str] | None
    first_line: int


def open_text(path: Path) -> IO[str]:
    """Open ``path`` for reading text, un-gzipping when it is gzip (by magic bytes)."""
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise InputFormatError(f"{path}: cannot open ({exc.strerror})") from None
    magic = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
    stream: IO[bytes] = gzip.GzipFile(fileobj=raw) if magic == b"\x1f\x8b" else raw
    return io.TextIOWrapper(stream, encoding="utf-8", newline="")


def read_chunks(
    path: Path, columns: ColumnSpec, delimiter: str, chunk_size: int = 500_000
) -> Iterator[EdgeChunk]:
    """Yield the edges of ``path`` in chunks of at most ``chunk_size`` lines.

    Blank lines and lines starting with ``#`` are skipped.
    """
    lhs: list[str] = []
    rhs: list[str] = []
    rel: list[str] = []
    has_rel = columns.rel is not None
    first = 1
    line_no = 0
    try:
        with open_text(path) as handle:
            for line_no, line in enumerate(handle, start=1):
                line = line.rstrip("\r\n")
                if not line or line.startswith("#"):
                    continue
                fields = line.split(delimiter)
                if len(fields) < columns.width:
                    raise InputFormatError(
                        f"{path}:{line_no}: expected at least {columns.width} fields separated by "
                        f"{delimiter!r}, got {len(fields)}: {line[:80]!r}"
                    )
                a, b = fields[columns.lhs].strip(), fields[columns.rhs].strip()
                if not a or not b:
                    raise InputFormatError(f"{path}:{line_no}: empty node id: {line[:80]!r}")
                lhs.append(a)
                rhs.append(b)
                if has_rel:
                    rel.append(fields[columns.rel].strip())  # type: ignore[index]
                if len(lhs) >= chunk_size:
                    yield EdgeChunk(lhs, rhs, rel if has_rel else None, first)
                    lhs, rhs, rel = [], [], []
                    first = line_no + 1
    except UnicodeDecodeError as exc:
        raise InputFormatError(f"{path}:{line_no + 1}: not UTF-8 text ({exc.reason})") from None
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputFormatError(f"{path}:{line_no + 1}: cannot read ({exc})") from None
    if lhs:
        yield EdgeChunk(lhs, rhs, rel if has_rel else None, first)
