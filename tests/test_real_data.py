"""WN18RR from ../shared/datasets, end to end through the CLI: import, train, eval, export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bigembed.cli.main import cli
from bigembed.demo import random_mrr

WN18RR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "wn18rr"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (WN18RR / "train.txt").exists(), reason=f"WN18RR not found at {WN18RR}"),
]


def test_wn18rr_end_to_end(tmp_path):
    runner = CliRunner()

    def ok(*args):
        result = runner.invoke(cli, [str(a) for a in args] + ["--no-progress"])
        assert result.exit_code == 0, result.output
        return result

    ok("import", WN18RR / "train.txt", "--split", f"valid={WN18RR / 'valid.txt'}",
       "--split", f"test={WN18RR / 'test.txt'}", "-o", tmp_path / "data", "-p", "2")
    facts = json.loads(runner.invoke(cli, ["info", str(tmp_path / "data"), "--json"]).output)
    assert facts["nodes"] == 40943 and facts["relations"] == 11
    assert facts["edges"] == {"train": 86835, "valid": 3034, "test": 3134}
    ok("train", tmp_path / "data", "-o", tmp_path / "run", "--dim", "50", "--epochs", "3",
       "--set", "model.operator=diagonal")
    ok("eval", tmp_path / "run", tmp_path / "data", "--protocol", "sampled", "--negatives", "100",
       "--json", tmp_path / "m.json")
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["count"] == 3134
    assert metrics["mrr"] > random_mrr(100) + 0.15, metrics["mrr"]
    # Filtered full ranking against all 40,943 nodes: a random embedding scores about 0.0003.
    ok("eval", tmp_path / "run", tmp_path / "data", "--json", tmp_path / "f.json")
    filtered = json.loads((tmp_path / "f.json").read_text())
    assert filtered["protocol"].startswith("filtered full ranking against all 40943 nodes")
    assert filtered["mrr"] > 0.05 and filtered["mean_rank"] < 40943 / 4, filtered
    ok("export", tmp_path / "run", "-o", tmp_path / "emb", "--format", "npy")
    assert len((tmp_path / "emb" / "names.txt").read_text().splitlines()) == 40943
