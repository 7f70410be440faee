"""Read edge files in large byte blocks parsed by Arrow's CSV reader, once, from a file or a pipe.

A block is a run of whole lines (tens of MB). A block made only of edges (no comment line,
no carriage return, the same number of fields on every line) is split by
:func:`pyarrow.csv.read_csv` in C on every core; any other block goes through the exact
line-by-line parser of :mod:`bigembed.partitioner.reader`, which skips and counts comment and
blank lines and names the line of any bad one. Either way the block comes out as an
:class:`~bigembed.partitioner.reader.EdgeChunk` of Arrow string arrays, so line numbers in
errors are those of the file whichever path a block took. ``-`` reads standard input.
"""

from __future__ import annotations

import io
import lzma
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from bigembed.errors import InputFormatError
from bigembed.partitioner.reader import (
    ColumnSpec,
    EdgeChunk,
    SkippedLines,
    _decompressed,
    _exact_block,
    _open_stored,
    looks_like_header,
)

STDIN = Path("-")
BLOCK_BYTES = 32 << 20
BOM = b"\xef\xbb\xbf"


def is_stdin(path: Path) -> bool:
    return str(path) == "-"


def describe(path: Path) -> str:
    """How a source is named in messages."""
    return "<stdin>" if is_stdin(path) else str(path)


class _Counted(io.RawIOBase):
    """Standard input with a count of the bytes read (for progress)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.stream.readinto(buffer)  # type: ignore[attr-defined]
        self.count += n or 0
        return n or 0

    def tell(self) -> int:
        return self.count


def _open(path: Path) -> tuple[IO[bytes], BinaryIO]:
    """(decompressed byte stream, the source as stored: its ``tell()`` is how far it was read)."""
    if is_stdin(path):
        # fd 0 unbuffered, not sys.stdin.buffer: the reader thread may be blocked in a read of a
        # stalled pipe when Ctrl-C ends the import, and a BufferedReader's lock held at
        # interpreter shutdown aborts Python ("could not acquire lock for <stdin>")
        try:
            source: BinaryIO = cast(BinaryIO, open(sys.stdin.fileno(), "rb", buffering=0, closefd=False))
        except (AttributeError, OSError, ValueError):  # a stand-in without a descriptor (tests, embedding)
            source = cast(BinaryIO, sys.stdin.buffer)
        counted = _Counted(source)
        raw = cast(io.BufferedReader, io.BufferedReader(counted, 1 << 20))
        return _decompressed(raw, path), cast(BinaryIO, counted)
    raw = _open_stored(path)
    try:
        return _decompressed(raw, path), cast(BinaryIO, raw)
    except BaseException:
        raw.close()
        raise


def _utf8_error(path: Path, block: bytes, first: int, exc: UnicodeDecodeError) -> InputFormatError:
    line = first + block.count(b"\n", 0, exc.start)
    start = block.rfind(b"\n", 0, exc.start) + 1
    return InputFormatError(f"{describe(path)}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start - start + 1} "
                            "of the line); convert the file to UTF-8 (e.g. with iconv) and import again")


def _has_empty(array: pa.Array) -> bool:
    """Whether a string array holds an empty string: two equal offsets in a row (one pass over
    the offsets, where utf8_length, equal and any took three over the values: 1.3 s of a
    47M-edge import)."""
    if not pa.types.is_string(array.type):
        return bool(pc.any(pc.equal(pc.binary_length(array), 0)).as_py())
    offsets = np.frombuffer(array.buffers()[1], np.int32)[array.offset : array.offset + len(array) + 1]
    return bool(len(array)) and int(np.diff(offsets).min()) == 0


def _arrow_block(data: bytes | bytearray, end: int, columns: ColumnSpec, delimiter: str, first: int, comment: str,
                 int_ids: bool = False) -> EdgeChunk | None:
    """Split the block ``data[:end]`` of plain edge lines with Arrow; None when it needs the
    exact parser.

    Arrow keeps empty lines as rows here, so a blank line (like any line with another number
    of fields) fails the parse and the block goes to the exact parser, which keeps line numbers;
    a parsed block therefore has one row per line. Arrow ends a line at a lone CR as well, so
    a block with one goes to the exact parser too (CRLF line ends are Arrow's)."""
    comment_b = comment.encode()
    if comment_b and (data.startswith(comment_b, 0, end) or data.find(b"\n" + comment_b, 0, end) >= 0):
        return None
    if data.find(b"\r", 0, end) >= 0 and data.count(b"\r", 0, end) != data.count(b"\r\n", 0, end):
        return None
    eol = data.find(b"\n", 0, end)
    width = data.count(delimiter.encode(), 0, eol if eol >= 0 else end) + 1
    if width < columns.width:
        return None
    names = [f"c{i}" for i in range(width)]
    ids = {columns.lhs, columns.rhs}
    wanted = ids | {c for c in (columns.rel, columns.weight) if c is not None}
    types = {names[i]: pa.int64() if int_ids and i in ids else pa.string() for i in wanted}
    if columns.rel is not None:  # few distinct values: codes per line, not one string each
        types[names[columns.rel]] = pa.dictionary(pa.int32(), pa.string())
    try:
        table = pa_csv.read_csv(
            pa.py_buffer(memoryview(data)[:end]),  # Arrow copies what it keeps: the buffer can be reused
            read_options=pa_csv.ReadOptions(column_names=names, block_size=8 << 20),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter, quote_char=False, double_quote=False,
                                              escape_char=False, newlines_in_values=False, ignore_empty_lines=False),
            convert_options=pa_csv.ConvertOptions(column_types=types,
                                                  include_columns=[names[i] for i in sorted(wanted)],
                                                  strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None  # a line with another number of fields, or bad UTF-8: the exact parser names it
    # Integer columns refuse padded tokens, so only string columns may need trimming; a
    # dictionary's values are few, so they are trimmed without looking for spaces first.
    spaced = (not int_ids or columns.weight is not None) and data.find(b" ", 0, end) >= 0

    def column(i: int) -> pa.Array:
        array = table.column(names[i]).combine_chunks()
        if pa.types.is_dictionary(array.type):
            array = pa.DictionaryArray.from_arrays(array.indices, pc.utf8_trim_whitespace(array.dictionary))
        elif spaced and pa.types.is_string(array.type):
            array = pc.utf8_trim_whitespace(array)
        return array

    lhs, rhs = column(columns.lhs), column(columns.rhs)
    if lhs.null_count or rhs.null_count:
        return None  # an empty integer token (a blank line reads as a row of them): the exact parser
    if not int_ids and (_has_empty(lhs) or _has_empty(rhs)):
        return None  # an empty id: let the exact parser report its line
    rel = column(columns.rel) if columns.rel is not None else None
    weight = column(columns.weight) if columns.weight is not None else None
    return EdgeChunk(lhs, rhs, rel, first, weight=weight)


def _exact(path: Path, block: bytes, columns: ColumnSpec, delimiter: str, first: int, comment: str,
           skipped: SkippedLines) -> EdgeChunk:
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _utf8_error(path, block, first, exc) from None
    chunk = _exact_block(path if not is_stdin(path) else Path("<stdin>"), text.splitlines(keepends=True), first,
                         columns, delimiter, comment, skipped)
    return replace(chunk, lhs=pa.array(chunk.lhs, pa.string()), rhs=pa.array(chunk.rhs, pa.string()),
                   rel=None if chunk.rel is None else pa.array(chunk.rel, pa.string()),
                   weight=None if chunk.weight is None else pa.array(chunk.weight, pa.string()))


def is_parquet(path: Path) -> bool:
    """A Parquet file (by its magic bytes; standard input is read as text)."""
    if is_stdin(path):
        return False
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"PAR1"
    except OSError:
        return False


def read_parquet(path: Path, columns: ColumnSpec, batch_rows: int = 1 << 20,
                 int_ids: bool = False) -> Iterator[EdgeChunk]:
    """The edges of a Parquet file, by column name: ``lhs``, ``rhs`` and (when --columns names
    them) ``rel`` and ``weight`` when the file has columns of those names, else the columns at
    the positions --columns gives. Values are read as text, as from a TSV (``int_ids``: integer
    lhs and rhs columns stay int64); an error names the row (1-based) where a text file's would
    name the line. ``end_offset`` is the share of the file's bytes that the rows read so far
    make up, for progress."""
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputFormatError(f"{path}: cannot read as Parquet ({exc})") from None
    names = handle.schema_arrow.names
    roles = {"lhs": columns.lhs, "rhs": columns.rhs, "rel": columns.rel, "weight": columns.weight}
    chosen: dict[str, str] = {}
    for role, position in roles.items():
        if position is None:
            continue
        if {"lhs", "rhs"} <= set(names):
            if role not in names:
                raise InputFormatError(f"{path}: no column named {role!r} (it has {', '.join(names)})")
            chosen[role] = role
        elif position < len(names):
            chosen[role] = names[position]
        else:
            raise InputFormatError(f"{path}: --columns wants column {position + 1} as {role}, "
                                   f"the file has {len(names)} ({', '.join(names)})")
    row = 0
    total_rows = max(1, handle.metadata.num_rows)
    size = path.stat().st_size
    with handle:
        for batch in handle.iter_batches(batch_size=batch_rows, columns=sorted(set(chosen.values()))):
            arrays = {}
            for role, name in chosen.items():
                column = batch.column(name)
                if column.null_count:
                    bad = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
                    raise InputFormatError(f"{path}:{row + bad + 1}: {role} ({name!r}) is null")
                if int_ids and role in ("lhs", "rhs") and pa.types.is_integer(column.type):
                    try:
                        arrays[role] = pc.cast(column, pa.int64())
                    except pa.ArrowInvalid:
                        raise InputFormatError(f"{path}: {role} ({name!r}) holds ids beyond int64") from None
                else:
                    arrays[role] = pc.cast(column, pa.string())
            for role in ("lhs", "rhs"):
                if not pa.types.is_string(arrays[role].type):
                    continue
                empty = pc.equal(pc.utf8_length(arrays[role]), 0)
                if pc.any(empty).as_py():
                    bad = int(np.flatnonzero(empty.to_numpy(zero_copy_only=False))[0])
                    raise InputFormatError(f"{path}:{row + bad + 1}: empty node id")
            row += batch.num_rows
            if batch.num_rows:
                yield EdgeChunk(arrays["lhs"], arrays["rhs"], arrays.get("rel"), row - batch.num_rows + 1,
                                end_offset=size * row // total_rows, weight=arrays.get("weight"))


def _fill(stream: IO[bytes], buf: bytearray, start: int) -> int:
    """Read into ``buf[start:]`` until it is full or the stream ends; returns where the data ends."""
    end = start
    view = memoryview(buf)
    try:
        while end < len(buf):
            n = stream.readinto(view[end:])  # type: ignore[attr-defined]
            if not n:
                break
            end += n
    finally:
        view.release()
    return end


def read_blocks(path: Path, columns: ColumnSpec, delimiter: str, *, header: bool | None = False, comment: str = "#",
                skipped: SkippedLines | None = None, block_bytes: int = BLOCK_BYTES,
                int_ids: bool = False) -> Iterator[EdgeChunk]:
    """Yield the edges of ``path`` (``-``: standard input) as chunks of Arrow string arrays.

    Same rules as :func:`bigembed.partitioner.reader.read_chunks` (header, comment and blank
    lines, byte-order mark, gzip/xz/bzip2), each input byte read once. ``int_ids``: lhs and rhs
    of Arrow-parsed blocks come as int64 arrays (a block with any other token takes the exact
    parser, and its ids come as text like every exact block's).
    """
    skipped = SkippedLines() if skipped is None else skipped
    if is_parquet(path):
        yield from read_parquet(path, columns, int_ids=int_ids)
        return
    line_no = 0
    stream, stored = _open(path)
    try:
        with stream:
            carry = stream.readline()
            if carry.startswith(BOM):
                carry = carry[len(BOM):]
            if carry:
                if header:
                    skipped.header += 1
                    carry, line_no = b"", 1
                elif header is None:
                    try:
                        first = carry.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise _utf8_error(path, carry, 1, exc) from None
                    if looks_like_header(first, delimiter):
                        shown = first.rstrip("\r\n")[:80]
                        raise InputFormatError(
                            f"{describe(path)}:1: the first line {shown!r} looks like a header; "
                            "pass --header to skip it or --no-header to import it as an edge")
            # Blocks are read into one reused buffer (fresh memory for every block costs page
            # faults and a copy); what follows the block's last newline is moved to its start.
            buf = bytearray(max(block_bytes, 2 * len(carry)))
            buf[: len(carry)] = carry
            held = len(carry)
            while True:
                end = _fill(stream, buf, held)
                eof = end < len(buf)
                cut = end if eof else buf.rfind(b"\n", 0, end) + 1
                if cut == 0 and not eof:  # a line longer than the buffer: read on into a bigger one
                    bigger = bytearray(2 * len(buf))
                    bigger[:end] = buf
                    buf, held = bigger, end
                    continue
                if cut:
                    parsed = _arrow_block(buf, cut, columns, delimiter, line_no + 1, comment, int_ids)
                    if parsed is not None:
                        chunk, lines = parsed, len(parsed.lhs)
                    else:
                        block = bytes(buf[:cut])
                        lines = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
                        chunk = _exact(path, block, columns, delimiter, line_no + 1, comment, skipped)
                    line_no += lines
                    if len(chunk.lhs):
                        yield replace(chunk, end_offset=stored.tell())
                if eof:
                    break
                held = end - cut
                buf[:held] = buf[cut:end]
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise InputFormatError(f"{describe(path)}: cannot read after line {line_no} ({exc})") from None
    finally:
        if not is_stdin(path):
            stored.close()
