"""`bigembed import`'s options for what a file holds besides edges, through click's CliRunner."""

from __future__ import annotations

import lzma

import pytest
from click.testing import CliRunner

from bigembed.cli.main import cli
from bigembed.storage.data_manifest import read_data_manifest


def run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_header_is_refused_then_skipped_or_imported_as_told(tmp_path):
    path = tmp_path / "e.tsv"
    path.write_text("lhs\trel\trhs\n# by hand\na\tr\tb\n\nb\tr\tc\n")
    r = run("import", path, "-o", tmp_path / "data", "--no-progress")
    assert r.exit_code == 1
    assert error_line(r) == (f"error: {path}:1: the first line 'lhs\\trel\\trhs' looks like a header; "
                             "pass --header to skip it or --no-header to import it as an edge")
    assert not (tmp_path / "data").exists()
    r = run("import", path, "-o", tmp_path / "data", "--header", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "; skipped 1 header, 1 comment and 1 blank lines" in r.output
    assert read_data_manifest(tmp_path / "data").num_entities == 3
    r = run("import", path, "-o", tmp_path / "kept", "--no-header", "--no-progress")
    assert r.exit_code == 0, r.output
    assert read_data_manifest(tmp_path / "kept").num_entities == 5


def test_comment_option_reads_hash_ids(tmp_path):
    path = tmp_path / "e.tsv"
    path.write_text("#1\tr\t#2\n#2\tr\t#3\n")
    r = run("import", path, "-o", tmp_path / "data", "--no-progress")
    assert r.exit_code == 1 and error_line(r) == f"error: {path}: no edges (the file is empty or only comments)"
    r = run("import", path, "-o", tmp_path / "data", "--comment", "", "--no-progress")
    assert r.exit_code == 0, r.output
    assert read_data_manifest(tmp_path / "data").num_entities == 3 and "skipped" not in r.output


def test_one_huge_int_id_is_refused_in_one_line(tmp_path):
    path = tmp_path / "e.tsv"
    path.write_text("0\tr\t1\n1\tr\t1099511627776\n")  # 2**40: 40 TiB of plan, on no machine
    r = run("import", path, "-o", tmp_path / "data", "--ids", "int", "--no-progress")
    assert r.exit_code == 1
    line = error_line(r)
    assert line.startswith(f"error: {path}:2: node id 1099511627776 makes --ids int plan 1,099,511,627,777 rows")
    assert line.endswith("use --ids string, or renumber the ids to 0..N-1")
    assert not (tmp_path / "data").exists()


def test_xz_file_imports(tmp_path):
    path = tmp_path / "e.tsv.xz"
    with lzma.open(path, "wt") as handle:
        handle.write("a\tr\tb\nb\tr\tc\n")
    r = run("import", path, "-o", tmp_path / "data", "--no-progress")
    assert r.exit_code == 0, r.output
    assert read_data_manifest(tmp_path / "data").num_entities == 3


@pytest.mark.parametrize("name, content", [("tab", "a\tr\tb\n"), ("\\t", "a\tr\tb\n"), ("comma", "a,r,b\n"),
                                           ("space", "a r b\n"), ("TAB", "a\tr\tb\n"), (";", "a;r;b\n")])
def test_delimiter_by_name_or_character(tmp_path, name, content):
    path = tmp_path / "e.txt"
    path.write_text(content + content.replace("a", "c"))
    r = run("import", path, "-o", tmp_path / "data", "--delimiter", name, "--no-progress")
    assert r.exit_code == 0, r.output
    assert read_data_manifest(tmp_path / "data").num_entities == 3  # a, b, c: every line split in three


def test_an_unknown_delimiter_name_is_a_usage_error(tmp_path):
    (tmp_path / "e.tsv").write_text("a\tr\tb\n")
    r = run("import", tmp_path / "e.tsv", "-o", tmp_path / "data", "--delimiter", "tabs")
    assert r.exit_code == 2
    assert error_line(r) == ("error: Invalid value for --delimiter: expected one character or one of tab, \\t, "
                             "comma, space, semicolon, pipe, got 'tabs' (see `bigembed import --help`)")


@pytest.mark.parametrize("content, args, hint", [
    ("a\tr\tb\nb,r,c\n", [], "2: expected at least 3 fields separated by '\\t', got 1: 'b,r,c'; use --delimiter ,"),
    ("a,b\nb,c\n", [], "1: expected at least 3 fields separated by '\\t', got 1: 'a,b'; use --delimiter , and "
                      "for an edge list without relations use --columns lhs,rhs"),
    ("a\tb\n", [], "1: expected at least 3 fields separated by '\\t', got 2: 'a\\tb'; for an edge list without "
                  "relations use --columns lhs,rhs"),
    ("a,b\n", ["--delimiter", ","], "1: expected at least 3 fields separated by ',', got 2: 'a,b'; for an edge "
                                    "list without relations use --columns lhs,rhs"),
    ("a r b\n", [], "1: expected at least 3 fields separated by '\\t', got 1: 'a r b'; use --delimiter space"),
])
def test_too_few_fields_names_the_line_and_hints_the_fix(tmp_path, content, args, hint):
    path = tmp_path / "e.csv"
    path.write_text(content)
    r = run("import", path, "-o", tmp_path / "data", *args, "--no-progress")
    assert r.exit_code == 1
    assert error_line(r) == f"error: {path}:{hint}"
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("content, columns", [("a,b\n", "lhs,rhs,rel"), ("a\n", "lhs,rel,rhs")])
def test_no_hint_where_neither_fix_applies(tmp_path, content, columns):
    path = tmp_path / "e.tsv"
    path.write_text(content)
    r = run("import", path, "-o", tmp_path / "data", "--delimiter", ",", "--columns", columns, "--no-progress")
    assert r.exit_code == 1
    assert error_line(r).endswith(f"got {len(content.split(','))}: {content.strip()!r}")
