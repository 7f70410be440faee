"""README's Python example ("From Python: bigembed.open_run"), run as written on a WN18RR run
trained here (smaller and shorter than the defaults, for time) and its Parquet export."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from bigembed.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
WN18RR = ROOT.parent / "shared" / "datasets" / "wn18rr"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (WN18RR / "train.txt").exists(), reason=f"WN18RR not found at {WN18RR}"),
]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- README example: tests/test_readme_example.py runs this block -->\n```python\n(.*?)```",
                      text, re.S)
    assert found, "README.md lost its tested Python example"
    return found.group(1)


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    pytest.importorskip("pandas")
    code = readme_example()
    assert len(code.strip().splitlines()) <= 11  # a notebook cell, not a program
    runner = CliRunner()

    def ok(*args):
        result = runner.invoke(cli, [str(a) for a in args] + ["--no-progress"])
        assert result.exit_code == 0, result.output

    ok("import", WN18RR / "train.txt", "--split", f"valid={WN18RR / 'valid.txt'}",
       "--split", f"test={WN18RR / 'test.txt'}", "-o", tmp_path / "wn-data", "-p", "2")
    ok("train", tmp_path / "wn-data", "-o", tmp_path / "wn-run", "--dim", "32", "--epochs", "2")
    ok("export", tmp_path / "wn-run", "-o", tmp_path / "wn-emb", "--format", "parquet")
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        scope: dict = {}
        exec(compile(code, "README.md", "exec"), scope)
    lines = printed.getvalue().splitlines()
    assert lines[0] == "Run('wn-run', v2, 40943 nodes, 11 relations, dim 32)"
    near = [line.split() for line in lines if line.startswith("near ")]
    is_a = [line.split() for line in lines if line.startswith("is a ")]
    assert len(near) == 5 and len(is_a) == 3 and len(lines) == 9
    assert "02084071" not in {n[1] for n in near}  # the node itself is left out
    assert [float(n[2]) for n in near] == sorted((float(n[2]) for n in near), reverse=True)
    assert scope["X"].shape == (40943, 32) and str(scope["X"].dtype) == "float32"
    assert list(scope["df"]["name"][:3]) == [n for n in _names(tmp_path / "wn-run")][:3]


def _names(run: Path) -> list[str]:
    import bigembed

    with bigembed.open_run(run) as opened:
        out = []
        for name in opened.names():
            out.append(name)
            if len(out) == 3:
                return out
    return out
