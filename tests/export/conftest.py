"""A small trained run that the export tests read (trained once for the folder)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from bigembed.cli.main import cli
from tests.conftest import write_tiny_graph


@pytest.fixture(scope="package")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    write_tiny_graph(root / "train.tsv", seed=3, edges=300)
    for args in (["import", root / "train.tsv", "-o", root / "data", "-p", "2", "--no-progress"],
                 ["train", root / "data", "-o", root / "run", "--dim", "8", "--epochs", "1", "--no-progress"]):
        r = CliRunner().invoke(cli, [str(a) for a in args])
        assert r.exit_code == 0, r.output
    return root / "run"
