"""Streaming edge-list reader: TSV/CSV, optionally gzip/xz/bzip2-compressed, read in chunks.

Memory is bounded by the chunk size, never by the file's length. Every parse
error names the file and the 1-based line number. A UTF-8 byte-order mark is
dropped; blank and comment lines are skipped and counted (:class:`SkippedLines`);
a first line made only of column names (``lhs rel rhs``) is refused unless the
caller says whether it is a header (``header=True`` skips line 1 of every file).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import IO, BinaryIO, cast

from bigembed.errors import InputFormatError

ROLES = ("lhs", "rel", "rhs", "weight")
# Words a header line is made of; a first line of only these is a header, not an edge.
HEADER_WORDS = frozenset({
    *ROLES, "head", "tail", "relation", "relationship", "predicate", "source", "target", "src", "dst", "from",
    "to", "subject", "object", "label", "type", "node", "node1", "node2",
})
# Magic bytes of compressed formats that are not read here, and the command that unpacks them.
_UNREAD = ((b"\x28\xb5\x2f\xfd", "zstd-compressed", "zstd -d"), (b"\x04\x22\x4d\x18", "lz4-compressed", "lz4 -d"),
           (b"PK\x03\x04", "a zip archive", "unzip"), (b"7z\xbc\xaf\x27\x1c", "a 7z archive", "7z x"))


@dataclass
class SkippedLines:
    """Lines read but not imported, counted across the files a caller passes it for."""

    header: int = 0
    comment: int = 0
    blank: int = 0

    def describe(self) -> str:
        """``"skipped 1 header, 3 comment and 2 blank lines"``, or "" when nothing was skipped."""
        parts = [f"{n} {what}" for what, n in (("header", self.header), ("comment", self.comment),
                                                ("blank", self.blank)) if n]
        if not parts:
            return ""
        words = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        total = self.header + self.comment + self.blank
        return f"skipped {words} line{'s' if total != 1 else ''}"


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


def _open_stored(path: Path) -> io.BufferedReader:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InputFormatError(f"{path}: cannot open ({exc.strerror})") from None


def _is_bzip2(magic: bytes) -> bool:
    # "BZh" + block size digit, then the magic of a first block or of the end of an empty stream
    return magic[:3] == b"BZh" and magic[3:4].isdigit() and magic[4:10] in (b"1AY&SY", b"\x17rE8P\x90")


def _decompressed(raw: io.BufferedReader, path: Path) -> IO[bytes]:
    """``raw`` itself, or a reader that decompresses it (gzip, xz, bzip2: told by magic bytes)."""
    magic = raw.peek(10)[:10]
    if magic.startswith(b"\x1f\x8b"):
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw))
    if magic.startswith(b"\xfd7zXZ\x00"):
        return cast(IO[bytes], lzma.LZMAFile(raw))
    if _is_bzip2(magic):
        return cast(IO[bytes], bz2.BZ2File(raw))
    for prefix, kind, command in _UNREAD:
        if magic.startswith(prefix):
            raw.close()
            raise InputFormatError(f"{path}: {kind}, which import cannot read; unpack it first "
                                   f"({command} {path}) and import the result")
    return raw


def _open_both(path: Path) -> tuple[IO[str], BinaryIO]:
    """(text reader of ``path``, the file as stored: its ``tell()`` is how far the text reader got)."""
    raw = _open_stored(path)
    try:
        stream = _decompressed(raw, path)
    except BaseException:
        raw.close()
        raise
    # utf-8-sig drops a byte-order mark at the start (and only there)
    return io.TextIOWrapper(stream, encoding="utf-8-sig", newline=""), cast(BinaryIO, raw)


def open_text(path: Path) -> IO[str]:
    """Open ``path`` for reading text, decompressing gzip, xz and bzip2 (by magic bytes)."""
    return _open_both(path)[0]


def _bad_utf8(path: Path) -> tuple[int, int, str] | None:
    """(1-based line, 1-based byte in the line, reason) of the first bytes that are not UTF-8."""
    with _open_stored(path) as raw, _decompressed(raw, path) as stream:
        for line_no, line in enumerate(stream, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return line_no, exc.start + 1, str(exc.reason)
    return None


def looks_like_header(line: str, delimiter: str) -> bool:
    """True when every field of ``line`` is a column name such as lhs, rhs, relation, source."""
    fields = [f.strip().lower() for f in line.rstrip("\r\n").split(delimiter)]
    return len(fields) >= 2 and all(f in HEADER_WORDS for f in fields)


def _fast_block(raw: list[str], columns: ColumnSpec, delimiter: str, first: int, comment: str) -> EdgeChunk | None:
    """Split a uniform block (same field count on every line, no comments) in C; else None."""
    counts = [line.count(delimiter) for line in raw]
    width = counts[0] + 1
    if width < columns.width or min(counts) != max(counts):
        return None
    text = "".join(raw)
    if (comment and (text.startswith(comment) or "\n" + comment in text)) or "\r" in text:
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


DEFAULT_COLUMNS = "lhs,rel,rhs"


def _too_few_fields_hint(line: str, columns: ColumnSpec, delimiter: str) -> str:
    """The likely fix for a line with too few fields: a CSV read with the default tab, or an
    edge list without relations read with the default lhs,rel,rhs columns ("" when neither)."""
    hints = []
    fields = len(line.split(delimiter))
    if delimiter == "\t" and "," in line:
        hints.append("use --delimiter ,")
        fields = len(line.split(","))
    elif delimiter == "\t" and " " in line.strip():
        hints.append("use --delimiter space")
        fields = len(line.split())
    if columns == ColumnSpec.parse(DEFAULT_COLUMNS) and fields == 2:
        hints.append("for an edge list without relations use --columns lhs,rhs")
    return "; " + " and ".join(hints) if hints else ""


def _exact_block(path: Path, raw: list[str], first: int, columns: ColumnSpec, delimiter: str, comment: str,
                 skipped: SkippedLines) -> EdgeChunk:
    """Line by line: skips (and counts) blank and comment lines, reports the exact line of a bad one."""
    lhs: list[str] = []
    rhs: list[str] = []
    rel: list[str] = []
    weight: list[str] = []
    lines: list[int] = []
    for line_no, line in enumerate(raw, start=first):
        line = line.rstrip("\r\n")
        if not line:
            skipped.blank += 1
            continue
        if comment and line.startswith(comment):
            skipped.comment += 1
            continue
        fields = line.split(delimiter)
        if len(fields) < columns.width:
            raise InputFormatError(
                f"{path}:{line_no}: expected at least {columns.width} fields separated by "
                f"{delimiter!r}, got {len(fields)}: {line[:80]!r}{_too_few_fields_hint(line, columns, delimiter)}"
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


def _parse_block(path: Path, raw: list[str], first: int, columns: ColumnSpec, delimiter: str, comment: str,
                 skipped: SkippedLines) -> EdgeChunk:
    """Parse a block of raw lines starting at line ``first``."""
    return (_fast_block(raw, columns, delimiter, first, comment)
            or _exact_block(path, raw, first, columns, delimiter, comment, skipped))


def _first_lines(path: Path, handle: IO[str], delimiter: str, header: bool | None,
                 skipped: SkippedLines) -> tuple[list[str], int]:
    """(line 1 of ``handle`` if it is to be parsed, how many lines were skipped before the rest);
    refuses a line 1 that looks like a header when ``header`` is None (not said)."""
    line = handle.readline()
    if not line:
        return [], 0
    if header:
        skipped.header += 1
        return [], 1
    if header is None and looks_like_header(line, delimiter):
        shown = line.rstrip("\r\n")[:80]
        raise InputFormatError(
            f"{path}:1: the first line {shown!r} looks like a header; "
            "pass --header to skip it or --no-header to import it as an edge"
        )
    return [line], 0


def read_chunks(
    path: Path, columns: ColumnSpec, delimiter: str, chunk_size: int = 500_000, *, header: bool | None = False,
    comment: str = "#", skipped: SkippedLines | None = None,
) -> Iterator[EdgeChunk]:
    """Yield the edges of ``path`` in chunks of at most ``chunk_size`` lines.

    Blank lines and lines starting with ``comment`` ("" for none) are skipped and
    added to ``skipped``. ``header``: True skips line 1, False parses it as an edge,
    None refuses it when it looks like a header (:func:`looks_like_header`).
    """
    skipped = SkippedLines() if skipped is None else skipped
    line_no = 0
    try:
        handle, stored = _open_both(path)
        with handle, stored:
            pending, line_no = _first_lines(path, handle, delimiter, header, skipped)
            while True:
                raw = pending + list(islice(handle, chunk_size - len(pending)))
                pending = []
                if not raw:
                    break
                chunk = _parse_block(path, raw, line_no + 1, columns, delimiter, comment, skipped)
                line_no += len(raw)
                if chunk.lhs:
                    yield replace(chunk, end_offset=stored.tell())
    except UnicodeDecodeError as exc:
        where = _bad_utf8(path)
        if where is None:  # pragma: no cover - the text reader and the byte scan disagree
            raise InputFormatError(f"{path}: not UTF-8 text after line {line_no} ({exc.reason})") from None
        line, byte, reason = where
        raise InputFormatError(f"{path}:{line}: not UTF-8 text ({reason} at byte {byte} of the line); "
                               "convert the file to UTF-8 (e.g. with iconv) and import again") from None
    except (OSError, EOFError, gzip.BadGzipFile, lzma.LZMAError) as exc:
        raise InputFormatError(f"{path}: cannot read after line {line_no} ({exc})") from None
