"""`bigembed import`'s options for what a file holds besides edges, through click's CliRunner."""

from __future__ import annotations

import lzma

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
