"""The block reader: lines cut across blocks, lines longer than a block, CRLF and lone CR line
ends, and line numbers in errors, whatever the block size."""

from __future__ import annotations

from pathlib import Path

import pytest

from bigembed.errors import InputFormatError
from bigembed.partitioner.blocks import read_blocks
from bigembed.partitioner.reader import ColumnSpec

SPEC = ColumnSpec.parse("lhs,rel,rhs")


def edges(path: Path, block_bytes: int, int_ids: bool = False) -> list[tuple[str, str, str]]:
    out = []
    for chunk in read_blocks(path, SPEC, "\t", block_bytes=block_bytes, int_ids=int_ids):
        rel = chunk.rel.to_pylist() if hasattr(chunk.rel, "to_pylist") else list(chunk.rel)
        out += [(str(a), str(r), str(b)) for a, r, b in zip(chunk.lhs.to_pylist(), rel, chunk.rhs.to_pylist())]
    return out


LINES = [("n1", "likes", "n22"), ("a-much-longer-node-name-than-one-block", "r", "b"), ("x", "r2", "y"),
         ("n4", "likes", "n5")]


@pytest.mark.parametrize("block_bytes", [8, 16, 33, 1 << 20])
@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_every_block_size_and_line_end_gives_the_same_edges(tmp_path, block_bytes, eol):
    path = tmp_path / "e.tsv"
    path.write_bytes("".join("\t".join(line) + eol for line in LINES).encode())
    assert edges(path, block_bytes) == LINES


def test_the_last_line_may_lack_its_newline(tmp_path):
    path = tmp_path / "e.tsv"
    path.write_text("1\tr\t2\n3\tr\t4")
    for block_bytes in (4, 7, 1 << 20):
        assert edges(path, block_bytes, int_ids=True) == [("1", "r", "2"), ("3", "r", "4")]


@pytest.mark.parametrize("block_bytes", [8, 64, 1 << 20])
def test_a_lone_cr_still_counts_lines_as_the_exact_parser_does(tmp_path, block_bytes):
    """Arrow and Python's splitlines both end a line at a lone CR; the error after it names the
    line as the exact parser counts them, whatever the block size."""
    path = tmp_path / "e.tsv"
    path.write_bytes(b"a\tr\tb\rc\tr\td\ne\tr\tf\ng\th\n")
    with pytest.raises(InputFormatError, match=r"e.tsv:4: expected at least 3 fields"):
        edges(path, block_bytes)


@pytest.mark.parametrize("block_bytes", [16, 1 << 20])
def test_an_error_after_many_blocks_names_its_line(tmp_path, block_bytes):
    path = tmp_path / "e.tsv"
    path.write_text("".join(f"{i}\tr\t{i + 1}\n" for i in range(500)) + "7\tr\n")
    with pytest.raises(InputFormatError, match=r"e.tsv:501: expected at least 3 fields"):
        list(read_blocks(path, SPEC, "\t", block_bytes=block_bytes, int_ids=True))
