"""-q/--quiet and -v/--verbose through click's CliRunner: which lines each prints."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from bigembed.cli.main import cli
from tests.conftest import write_tiny_graph


def run(*args: object) -> list[str]:
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.output.splitlines()


BUCKET_LINE = re.compile(r"^epoch \d+, bucket [1-4]/4 \([01], [01]\): \d+ edges, loss \d+\.\d{4}, \d+\.\d\d s$")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("verbosity")
    write_tiny_graph(root / "e.tsv", seed=4, edges=150)
    return root


def test_quiet_prints_only_the_result_lines(data, tmp_path):
    lines = run("import", data / "e.tsv", "-o", tmp_path / "d", "-p", "2", "-q")
    assert [line.split(":")[0] for line in lines] == ["imported", f"wrote {tmp_path / 'd'}"]
    assert run("train", tmp_path / "d", "-o", tmp_path / "r", "--dim", "4", "--epochs", "1", "--quiet") == [
        "done: v1, 1 epoch trained"]
    assert run("export", tmp_path / "r", "-o", tmp_path / "x", "-q") == [f"wrote {tmp_path / 'x'} (37 rows, v1)"]
    assert run("generate", "-o", tmp_path / "g", "--nodes", "20", "--edges", "50", "-q") == [
        "wrote " + ", ".join(str(tmp_path / "g" / f"{s}.tsv") for s in ("train", "valid", "test"))]


def test_default_and_verbose_train_lines(data, tmp_path):
    default = run("import", data / "e.tsv", "-o", tmp_path / "d", "-p", "2", "--no-progress")
    assert any(line.startswith("import memory") for line in default)  # an info line -q hides
    default = run("train", tmp_path / "d", "-o", tmp_path / "r", "--dim", "4", "--epochs", "1", "--no-progress")
    assert any(line.startswith("started") for line in default) and default[-1] == "done: v1, 1 epoch trained"
    assert not any(BUCKET_LINE.match(line) for line in default)
    verbose = run("train", tmp_path / "d", "-o", tmp_path / "r", "--epochs", "2", "-v", "--no-progress")
    buckets = [line for line in verbose if line.startswith("epoch 2, bucket")]
    assert len(buckets) == 4 and all(BUCKET_LINE.match(line) for line in buckets), verbose
    assert any(line.startswith("resuming") for line in verbose)  # the info lines stay
    assert verbose[-1] == "done: v2, 2 epochs trained"


def test_quiet_demo_prints_its_result_only(tmp_path):
    lines = run("demo", "-o", tmp_path / "demo", "-q")
    assert len(lines) == 1 and lines[0].startswith("demo: test MRR ")


def test_quiet_and_verbose_together_is_a_usage_error(tmp_path):
    r = CliRunner().invoke(cli, ["train", str(tmp_path / "d"), "-o", str(tmp_path / "r"), "-q", "-v"])
    assert r.exit_code == 2
    assert r.output.splitlines() == ["error: give -q/--quiet or -v/--verbose, not both (see `bigembed train --help`)"]
