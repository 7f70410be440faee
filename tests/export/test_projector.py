"""export --format projector: a seeded uniform sample of the exported vectors, for TensorBoard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bigembed.cli.main import cli
from bigembed.export.projector import sample_rows


def export(run_dir: Path, out: Path, *args: str):
    r = CliRunner().invoke(cli, ["export", str(run_dir), "-o", str(out), *args, "--no-progress"])
    assert r.exit_code == 0, r.output
    return r


@pytest.fixture(scope="module")
def npy(run_dir, tmp_path_factory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("npy") / "npy"
    export(run_dir, out, "--format", "npy")
    names = (out / "names.txt").read_text().splitlines()
    return dict(zip(names, np.load(out / "embeddings.npy"), strict=True))


def read_projector(out: Path) -> tuple[list[str], np.ndarray]:
    names = (out / "metadata.tsv").read_text().splitlines()
    vectors = np.loadtxt(out / "vectors.tsv", delimiter="\t", dtype=np.float32, ndmin=2)
    return names, vectors


def test_the_sample_is_the_exported_vectors_of_exactly_those_names(run_dir, npy, tmp_path):
    r = export(run_dir, tmp_path / "p", "--format", "projector", "--sample", "10", "--seed", "3")
    names, vectors = read_projector(tmp_path / "p")
    assert len(names) == len(set(names)) == 10 and vectors.shape == (10, 8)
    assert "\t" not in "".join(names) and all(n in npy for n in names)  # one column, no header
    assert np.allclose(vectors, np.stack([npy[n] for n in names]), rtol=1e-6, atol=0)
    assert f"(10 of {len(npy)} rows" in r.output
    config = (tmp_path / "p" / "projector_config.pbtxt").read_text()
    assert 'tensor_path: "vectors.tsv"' in config and 'metadata_path: "metadata.tsv"' in config
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["metadata.tsv", "projector_config.pbtxt",
                                                                    "vectors.tsv"]


def test_the_same_seed_gives_the_same_sample_and_another_seed_another(run_dir, tmp_path):
    for out, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        export(run_dir, tmp_path / out, "--format", "projector", "--sample", "12", "--seed", seed)
    for file in ("metadata.tsv", "vectors.tsv"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    assert (tmp_path / "a" / "metadata.tsv").read_text() != (tmp_path / "c" / "metadata.tsv").read_text()


def test_a_sample_larger_than_the_table_is_every_node_once(run_dir, npy, tmp_path):
    r = export(run_dir, tmp_path / "p", "--format", "projector", "--sample", "100000")
    names, vectors = read_projector(tmp_path / "p")
    assert sorted(names) == sorted(npy) and len(names) == len(npy)
    assert np.allclose(vectors, np.stack([npy[n] for n in names]), rtol=1e-6, atol=0)
    assert f"({len(npy)} rows" in r.output


def test_the_default_sample_is_10000_or_every_node(run_dir, npy, tmp_path):
    export(run_dir, tmp_path / "p", "--format", "projector")
    assert len(read_projector(tmp_path / "p")[0]) == len(npy)  # fewer than 10,000 nodes


def test_sample_rows_is_uniform_distinct_and_sorted():
    counts = np.zeros(20, dtype=np.int64)
    for seed in range(2000):
        rows = sample_rows(20, 5, seed)
        assert len(rows) == 5 and np.all(np.diff(rows) > 0) and rows[0] >= 0 and rows[-1] < 20
        counts[rows] += 1
    assert counts.min() > 400 and counts.max() < 600  # 500 expected each; sd about 19
    assert np.array_equal(sample_rows(7, 9, 0), np.arange(7))


@pytest.mark.parametrize("args", [["--format", "npy", "--sample", "5"], ["--seed", "2"]])
def test_sample_and_seed_go_with_projector_only(run_dir, tmp_path, args):
    r = CliRunner().invoke(cli, ["export", str(run_dir), "-o", str(tmp_path / "o"), *args])
    assert r.exit_code == 2
    assert r.output.splitlines() == ["error: --sample and --seed go with --format projector "
                                     "(see `bigembed export --help`)"]
    assert not (tmp_path / "o").exists()
