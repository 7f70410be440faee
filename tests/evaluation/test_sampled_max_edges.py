"""`bigembed eval --protocol sampled --max-edges N`: a seeded sample of a big split."""

from __future__ import annotations

import json

from click.testing import CliRunner

from bigembed.cli.main import cli
from tests.conftest import write_tiny_graph


def test_max_edges_ranks_a_seeded_sample_of_about_that_size(tmp_path):
    files = {s: tmp_path / f"{s}.tsv" for s in ("train", "test")}
    write_tiny_graph(files["train"], seed=1, edges=500, nodes=50)
    write_tiny_graph(files["test"], seed=2, edges=400, nodes=50)
    runner = CliRunner()
    data, run = tmp_path / "data", tmp_path / "run"
    assert runner.invoke(cli, ["import", str(files["train"]), "--split", f"test={files['test']}", "-o", str(data),
                               "-p", "2", "--no-progress"]).exit_code == 0
    assert runner.invoke(cli, ["train", str(data), "-o", str(run), "--epochs", "1", "--dim", "8",
                               "--no-progress"]).exit_code == 0

    def sampled(*extra: str) -> dict:
        r = runner.invoke(cli, ["eval", str(run), str(data), "--protocol", "sampled", "--negatives", "20",
                                "--json", "-", "--no-progress", *extra])
        assert r.exit_code == 0, r.output
        return json.loads(r.output)

    whole, part, again = sampled(), sampled("--max-edges", "100"), sampled("--max-edges", "100")
    assert whole["count"] == 400
    assert 100 <= part["count"] <= 104  # each of the 4 buckets rounds its share up
    assert part == again  # seeded
    assert sampled("--max-edges", "1000")["count"] == 400
    r = runner.invoke(cli, ["eval", str(run), str(data), "--max-edges", "10"])
    assert r.exit_code == 2 and "--max-edges goes with --protocol sampled" in r.output
