"""Export on a full disk: a one-line error, exit 1, nothing left behind, in every format."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from bigembed.cli.main import cli

FILE_LIMIT = 1000  # bytes: smaller than any format's first file of the tiny run


def _full_disk() -> None:
    """In the child: writes past FILE_LIMIT bytes fail with EFBIG, as on a full disk."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


@pytest.mark.parametrize("fmt", ["tsv", "npy", "h5", "parquet", "projector"])
def test_export_on_a_full_disk_is_a_one_line_error_and_leaves_nothing(run_dir, tmp_path, fmt):
    """HDF5 writing to the disk itself crashed the interpreter at exit (139) after the error."""
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "bigembed.cli.main", "export", str(run_dir), "-o", str(out),
                           "--format", fmt, "--no-progress"],
                          capture_output=True, text=True, preexec_fn=_full_disk, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    assert "export failed while writing" in lines[0] and "nothing was kept" in lines[0]
    assert list(tmp_path.iterdir()) == []  # neither OUT nor its temp folder


def test_h5_export_without_a_limit_still_writes_readable_files(run_dir, tmp_path):
    import h5py
    import numpy as np

    from bigembed.checkpoint import emb_key, read_current, read_manifest, read_shard_of

    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["export", str(run_dir), "-o", str(out), "--format", "h5", "--no-progress"])
    assert r.exit_code == 0, r.output
    manifest = read_manifest(run_dir, read_current(run_dir))
    for p in range(2):
        with h5py.File(out / f"embeddings_node_{p}.v{manifest.version}.h5", "r") as f:
            assert f.attrs["format_version"] == 1
            assert np.array_equal(f["embeddings"][...], read_shard_of(run_dir, manifest, emb_key("node", p)))
    with h5py.File(out / f"model.v{manifest.version}.h5", "r") as f:
        assert f.attrs["format_version"] == 1 and "r0" in f.attrs["relations"]


def test_parquet_export_has_the_npy_export_rows_and_loads_in_one_line(run_dir, tmp_path):
    """Names and vectors equal the npy export, row for row; DuckDB reads the file as is."""
    import duckdb
    import numpy as np
    import pyarrow.parquet as pq

    for fmt in ("parquet", "npy"):
        done = CliRunner().invoke(cli, ["export", str(run_dir), "-o", str(tmp_path / fmt), "--format", fmt,
                                        "--no-progress"])
        assert done.exit_code == 0, done.output
    table = pq.read_table(tmp_path / "parquet" / "embeddings.parquet")
    assert table.schema.names == ["name", "embedding"]
    vectors = np.asarray(table.column("embedding").combine_chunks().flatten()).reshape(table.num_rows, -1)
    assert np.array_equal(vectors, np.load(tmp_path / "npy" / "embeddings.npy"))
    assert table.column("name").to_pylist() == (tmp_path / "npy" / "names.txt").read_text().splitlines()
    path = tmp_path / "parquet" / "embeddings.parquet"
    first = duckdb.sql(f"SELECT name, embedding FROM '{path}' LIMIT 1").fetchall()[0]
    assert first[0] == table.column("name")[0].as_py()
    assert np.allclose(first[1], vectors[0])
    assert (tmp_path / "parquet" / "relation_params.npy").exists()


@pytest.mark.parametrize("fmt", ["tsv", "npy", "parquet", "h5"])
def test_every_file_relations_json_names_exists_and_holds_the_relations(run_dir, tmp_path, fmt):
    """tsv wrote a relations.json pointing at a relation_params.npy that it did not write."""
    import json

    import h5py
    import numpy as np

    from bigembed.checkpoint import RELATION_PARAMS_KEY, read_current, read_manifest, read_shard_of

    done = CliRunner().invoke(cli, ["export", str(run_dir), "-o", str(tmp_path / fmt), "--format", fmt,
                                    "--no-progress"])
    assert done.exit_code == 0, done.output
    out = tmp_path / fmt
    about = json.loads((out / "relations.json").read_text())
    named = {key: value for key, value in about.items() if key.endswith("_file")}
    assert named["params_file"] is not None  # the default model's relations have parameters
    for file in named.values():
        assert (out / file).is_file(), f"relations.json names {file}, which {fmt} did not write"
    manifest = read_manifest(run_dir, read_current(run_dir))
    expected = read_shard_of(run_dir, manifest, RELATION_PARAMS_KEY)
    if fmt == "h5":
        with h5py.File(out / about["params_file"], "r") as f:
            params = f[about["params_dataset"]][...]
            names = json.loads(f.attrs[about["names_attr"]])
    else:
        params = np.load(out / about["params_file"])
        names = (out / about["names_file"]).read_text().splitlines()
    assert params.dtype == np.float32 and np.array_equal(params, expected)
    assert names == [r["name"] for r in about["relations"] if not r["name"].endswith(" (inverse)")] == ["r0", "r1",
                                                                                                      "r2"]
    last = about["relations"][-1]
    assert last["offset"] + int(np.prod(last["shape"])) == params.size  # the layout covers the vector
