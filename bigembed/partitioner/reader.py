"""Streaming edge-list reader: TSV/CSV, optionally gzipped, read in fixed-size chunks.

Memory is bounded by the chunk size, never by the file's length. Every parse
error names the file and the 1-based line number.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import IO, cast

from bigembed.errors import InputFormatError

ROLES = ("lhs", "rel", "rhs", "weight")


@dataclass(frozen=True)
class ColumnSpec:
    """Where lhs, rhs and (optionally) rel and weight sit in a line; ``rel`` is None for one
    relation, ``weight`` None for unweighted edges."""

    lhs: int
    rhs: int
    rel: int | None
    width: int
    weight: int | None = None

    @classmethod
    def parse(cls, text: str) -> ColumnSpec:
        names = [n.strip() for n in text.split(",")]
        positions: dict[str, int] = {}
        for i, name in enumerate(names):
            if name in ("_", ""):
                continue
            if name not in ROLES:
                raise InputFormatError(
                    f"--columns {text!r}: unknown column {name!r} (use lhs, rel, rhs, weight or _ to skip)"
                )
            if name in positions:
                raise InputFormatError(f"--columns {text!r}: column {name!r} given twice")
            positions[name] = i
        if "lhs" not in positions or "rhs" not in positions:
            raise InputFormatError(f"--columns {text!r}: must name both lhs and rhs")
        return cls(positions["lhs"], positions["rhs"], positions.get("rel"), max(positions.values()) + 1,
                   positions.get("weight"))


@dataclass(frozen=True)
class EdgeChunk:
    """Parsed lines: parallel lists of raw lhs/rel/rhs/weight tokens (rel is None for one
    relation, weight None for unweighted edges).

    ``lines`` holds each row's 1-based line number when blank or comment lines were
    skipped inside the chunk; otherwise row ``i`` is line ``first_line + i``.
    """

    lhs: list[str]
    rhs: list[str]
    rel: list[str] | None
    first_line: int
    lines: list[int] | None = None
    end_offset: int = 0  # bytes of the file (as stored, maybe gzipped) read so far
    weight: list[str] | None = None

    def line_of(self, row: int) -> int:
        return self.lines[row] if self.lines is not None else self.first_line + row


def open_text(path: Path) -> IO[str]:
    """Open ``path`` for reading text, un-gzipping when it is gzip (by magic bytes)."""
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise InputFormatError(f"{path}: cannot open ({exc.strerror})") from None
    magic = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
    stream = cast(IO[bytes], gzip.GzipFile(fileobj=raw) if magic == b"\x1f\x8b" else raw)
    return io.TextIOWrapper(stream, encoding="utf-8", newline="")


def _fast_block(raw: list[str], columns: ColumnSpec, delimiter: str, first: int) -> EdgeChunk | None:
    """Split a uniform block (same field count on every line, no comments) in C; else None."""
    counts = [line.count(delimiter) for line in raw]
    width = counts[0] + 1
    if width < columns.width or min(counts) != max(counts):
        return None
    text = "".join(raw)
    if text.startswith("#") or "\n#" in text or "\r" in text:
        return None
    text = text.removesuffix("\n")
    tokens = text.replace("\n", delimiter).split(delimiter)
    if len(tokens) != width * len(raw):
        return None
    if " " in text:
        tokens = [t.strip() for t in tokens]
    lhs, rhs = tokens[columns.lhs :: width], tokens[columns.rhs :: width]
    if "" in lhs or "" in rhs:
        return None  # let the exact path report the line
    rel = tokens[columns.rel :: width] if columns.rel is not None else None
    weight = tokens[columns.weight :: width] if columns.weight is not None else None
    return EdgeChunk(lhs, rhs, rel, first, weight=weight)


def _stored_offset(handle: IO[str]) -> int:
    """How far into the file as stored (compressed for gzip) ``handle`` has read."""
    buffer = getattr(handle, "buffer", None)
    if isinstance(buffer, gzip.GzipFile) and buffer.fileobj is not None:
        return int(cast(IO[bytes], buffer.fileobj).tell())
    return int(buffer.tell()) if buffer is not None else 0


def _exact_block(path: Path, raw: list[str], first: int, columns: ColumnSpec, delimiter: str) -> EdgeChunk:
    """Line by line: skips blank and comment lines, reports the exact line of a bad one."""
    lhs: list[str] = []
    rhs: list[str] = []
    rel: list[str] = []
    weight: list[str] = []
    lines: list[int] = []
    for line_no, line in enumerate(raw, start=first):
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
        if columns.rel is not None:
            rel.append(fields[columns.rel].strip())
        if columns.weight is not None:
            weight.append(fields[columns.weight].strip())
        lines.append(line_no)
    return EdgeChunk(lhs, rhs, rel if columns.rel is not None else None, first, lines,
                     weight=weight if columns.weight is not None else None)


def _parse_block(path: Path, raw: list[str], first: int, columns: ColumnSpec, delimiter: str) -> EdgeChunk:
    """Parse a block of raw lines starting at line ``first``."""
    return _fast_block(raw, columns, delimiter, first) or _exact_block(path, raw, first, columns, delimiter)


def read_chunks(
    path: Path, columns: ColumnSpec, delimiter: str, chunk_size: int = 500_000
) -> Iterator[EdgeChunk]:
    """Yield the edges of ``path`` in chunks of at most ``chunk_size`` lines.

    Blank lines and lines starting with ``#`` are skipped.
    """
    line_no = 0
    try:
        with open_text(path) as handle:
            while True:
                raw = list(islice(handle, chunk_size))
                if not raw:
                    break
                chunk = _parse_block(path, raw, line_no + 1, columns, delimiter)
                line_no += len(raw)
                if chunk.lhs:
                    yield replace(chunk, end_offset=_stored_offset(handle))
    except UnicodeDecodeError as exc:
        raise InputFormatError(f"{path}: not UTF-8 text after line {line_no} ({exc.reason})") from None
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputFormatError(f"{path}: cannot read after line {line_no} ({exc})") from None
