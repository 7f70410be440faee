"""What an edge file may hold besides edges: a byte-order mark, a header, comments, bad bytes,
compression; and int ids too large to plan. Each is read right or refused in one line."""

from __future__ import annotations

import bz2
import gzip
import lzma
from collections import Counter
from pathlib import Path

import pytest

from bigembed.errors import InputFormatError
from bigembed.partitioner import ImportSpec, Source, plan_import
from bigembed.partitioner import plan as plan_module
from bigembed.partitioner.reader import ColumnSpec
from tests.conftest import import_files, write_tiny_graph
from tests.partitioner.test_import import read_back

GIB = 1 << 30


def plan_of(path: Path, **kw):
    return plan_import(ImportSpec(sources=[Source("train", path)], **kw))


def refusal(path: Path, **kw) -> str:
    with pytest.raises(InputFormatError) as info:
        plan_of(path, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_byte_order_mark_is_not_part_of_the_first_id(tmp_path):
    path = tmp_path / "e.tsv"
    path.write_bytes("\ufeffa\tr\tb\nb\tr\ta\n".encode())
    plan = plan_of(path)
    assert plan.node_index is not None and list(plan.node_index[0]) == ["a", "b"]


@pytest.mark.parametrize("first", ["lhs\trel\trhs", "head\trelation\ttail", "Source\tType\tTarget"])
def test_a_header_like_first_line_is_refused_unless_told(tmp_path, first):
    path = tmp_path / "e.tsv"
    path.write_text(f"{first}\na\tr\tb\n")
    assert refusal(path) == (f"{path}:1: the first line {first!r} looks like a header; "
                             "pass --header to skip it or --no-header to import it as an edge")
    skipped = plan_of(path, header=True)
    assert skipped.num_entities == 2 and skipped.skipped.header == 1
    assert "skipped 1 header line" in skipped.summary()
    kept = plan_of(path, header=False)
    assert kept.num_entities == 4 and len(kept.relation_index) == 2


def test_a_first_line_with_any_other_word_is_an_edge(tmp_path):
    path = tmp_path / "e.tsv"
    path.write_text("source\tlikes\ttarget\na\tr\tb\n")
    assert plan_of(path).num_entities == 4


def test_header_skips_line_one_of_every_file_in_both_passes(tmp_path):
    train, test = tmp_path / "train.tsv", tmp_path / "test.tsv"
    train.write_text("lhs\trel\trhs\na\tr\tb\nb\tr\tc\n")
    test.write_text("a\tr\tc\nc\tr\ta\n")  # no header here: its line 1 is skipped all the same
    data = import_files(tmp_path / "data", {"train": train, "test": test}, 2, header=True)
    assert Counter(read_back(data)) == Counter([("a", "r", "b"), ("b", "r", "c")])
    assert read_back(data, "test") == [("c", "r", "a")]


def test_lines_after_a_skipped_header_keep_their_numbers(tmp_path):
    path = tmp_path / "e.tsv"
    path.write_text("lhs\trel\trhs\na\tr\tb\n\nc\tr\n")
    assert refusal(path, header=True, chunk_size=2).startswith(f"{path}:4: expected at least 3 fields")


@pytest.mark.parametrize("chunk_size", [2, 1000])
def test_skipped_comment_and_blank_lines_are_counted_in_the_summary(tmp_path, chunk_size):
    path = tmp_path / "e.tsv"
    path.write_text("# made by hand\na\tr\tb\n\n# more\nb\tr\tc\n\n\nc\tr\ta\n")
    plan = plan_of(path, chunk_size=chunk_size)
    assert (plan.skipped.comment, plan.skipped.blank, plan.num_entities) == (2, 3, 3)
    assert plan.summary().endswith("; skipped 2 comment and 3 blank lines")


def test_a_summary_without_skipped_lines_says_nothing_of_them(tmp_path):
    path = tmp_path / "e.tsv"
    path.write_text("a\tr\tb\n")
    assert "skipped" not in plan_of(path).summary()


@pytest.mark.parametrize("chunk_size", [1, 1000])
def test_comment_skipping_can_be_turned_off_or_changed(tmp_path, chunk_size):
    path = tmp_path / "e.tsv"
    path.write_text("#a\tr\tb\n#b\tr\t#a\n// note\tr\tx\n")
    plan = plan_of(path, comment="", chunk_size=chunk_size)
    assert plan.node_index is not None and list(plan.node_index[0]) == ["#a", "b", "#b", "// note", "x"]
    assert plan.skipped.comment == 0
    plan = plan_of(path, comment="//", chunk_size=chunk_size)
    assert plan.node_index is not None and list(plan.node_index[0]) == ["#a", "b", "#b"]
    assert plan.skipped.comment == 1


@pytest.mark.parametrize("bad_line", [1, 2, 4001])
@pytest.mark.parametrize("opener", [open, gzip.open])
def test_bad_utf8_names_its_own_line(tmp_path, bad_line, opener):
    path = tmp_path / "e.tsv"
    lines = [f"n{i}\tr\tn{i + 1}\n".encode() for i in range(6000)]
    lines[bad_line - 1] = b"caf\xe9\tr\tb\n"  # latin-1, not UTF-8
    with opener(path, "wb") as handle:
        handle.write(b"".join(lines))
    assert refusal(path, chunk_size=1000) == (
        f"{path}:{bad_line}: not UTF-8 text (invalid continuation byte at byte 4 of the line); "
        "convert the file to UTF-8 (e.g. with iconv) and import again"
    )


@pytest.mark.parametrize("opener", [lzma.open, bz2.open, gzip.open])
def test_xz_and_bzip2_are_read_like_gzip(tmp_path, opener):
    plain = tmp_path / "tiny.tsv"
    triples = write_tiny_graph(plain)
    packed = tmp_path / "tiny.tsv.packed"
    with opener(packed, "wb") as handle:
        handle.write(b"\xef\xbb\xbf" + plain.read_bytes())  # a byte-order mark inside the compressed text too
    seen: list[int] = []
    plan_import(ImportSpec(sources=[Source("train", packed)], chunk_size=50), seen.append)
    assert sum(seen) == packed.stat().st_size
    data = import_files(tmp_path / "data", {"train": packed}, 3, chunk_size=50)
    assert Counter(read_back(data)) == Counter(triples)


def test_text_that_merely_starts_like_bzip2_is_text(tmp_path):
    path = tmp_path / "e.tsv"
    path.write_text("BZh9\tr\tb\n")
    assert plan_of(path).num_entities == 2


@pytest.mark.parametrize("magic, kind, command", [(b"\x28\xb5\x2f\xfd", "zstd-compressed", "zstd -d"),
                                                   (b"PK\x03\x04", "a zip archive", "unzip")])
def test_compression_not_read_is_named_with_the_command_to_unpack_it(tmp_path, magic, kind, command):
    path = tmp_path / "e.tsv.z"
    path.write_bytes(magic + b"\x00" * 20)
    assert refusal(path) == (f"{path}: {kind}, which import cannot read; unpack it first "
                             f"({command} {path}) and import the result")


def test_one_huge_int_id_is_refused_before_its_rows_are_allocated(tmp_path):
    path = tmp_path / "e.tsv"
    path.write_text("0\tr\t1\n1\tr\t2\n5\tr\t2147483648\n3\tr\t4\n")
    assert refusal(path, ids="int", plan_memory=GIB, chunk_size=2) == (
        f"{path}:3: node id 2147483648 makes --ids int plan 2,147,483,649 rows (every id from 0 up), "
        "which needs 80.0 GiB but 1.0 GiB is available; use --ids string, or renumber the ids to 0..N-1"
    )
    assert plan_of(path, ids="string").num_entities == 7  # the same file with string ids is tiny


def test_int_ids_are_checked_against_the_memory_available_now(tmp_path, monkeypatch):
    path = tmp_path / "e.tsv"
    path.write_text("0\tr\t1\n1\tr\t100000\n")
    monkeypatch.setattr(plan_module, "available_memory", lambda: 1 << 20)
    assert "100,001 rows" in refusal(path, ids="int")
    monkeypatch.setattr(plan_module, "available_memory", lambda: 1 << 30)
    assert plan_of(path, ids="int").num_entities == 100_001
    monkeypatch.setattr(plan_module, "available_memory", lambda: None)  # unknown: not checked
    assert plan_of(path, ids="int").num_entities == 100_001


@pytest.mark.parametrize(
    "token, message",
    [("9223372036854775808", "node id '9223372036854775808' is too large for --ids int"),
     ("-99999999999999999999", "node id '-99999999999999999999' is negative for --ids int"),
     ("-3", "negative node id '-3' (--ids int needs ids >= 0)"),
     ("1.5", "node id '1.5' is not an integer (drop --ids int to use string ids)")],
)
def test_int_ids_out_of_range_name_their_line(tmp_path, token, message):
    path = tmp_path / "e.tsv"
    path.write_text(f"0\tr\t1\n1\tr\t2\n2\tr\t{token}\n")
    assert refusal(path, ids="int", columns=ColumnSpec.parse("lhs,rel,rhs")).startswith(f"{path}:3: {message}")
