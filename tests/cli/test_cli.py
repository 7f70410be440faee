"""Every verb through click's CliRunner: exit codes and one-line messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from bigembed.checkpoint import emb_key, read_current, read_manifest, read_shard_of
from bigembed.cli.main import cli
from tests.checkpoint.test_versions import damage
from tests.conftest import write_tiny_graph


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    train_f, test_f = root / "train.tsv", root / "test.tsv"
    write_tiny_graph(train_f, seed=1, edges=400)
    write_tiny_graph(test_f, seed=2, edges=50)
    r = run("import", train_f, "--split", f"test={test_f}", "-o", root / "data", "-p", "3", "--no-progress")
    assert r.exit_code == 0, r.output
    r = run("train", root / "data", "-o", root / "run", "--dim", "8", "--epochs", "2", "--no-progress")
    assert r.exit_code == 0, r.output
    return root


def test_import_reports_the_plan(trained):
    info = run("info", trained / "data", "--json")
    facts = json.loads(info.output)
    assert facts["kind"] == "DATA" and facts["partitions"] == 3 and facts["buckets"] == 9
    assert facts["edges"] == {"train": 400, "test": 50}


def test_train_says_started_then_resumes(trained, tmp_path):
    r = run("train", trained / "data", "-o", tmp_path / "run", "--dim", "4", "--epochs", "1", "--no-progress")
    assert r.exit_code == 0 and "started" in r.output
    r = run("train", trained / "data", "-o", tmp_path / "run", "--epochs", "2", "--no-progress")
    assert r.exit_code == 0 and "resuming" in r.output and "done: v2" in r.output


def test_started_line_counts_partitions_as_people_write_them(trained, tmp_path):
    write_tiny_graph(tmp_path / "g.tsv", seed=3, edges=100)
    assert run("import", tmp_path / "g.tsv", "-o", tmp_path / "d1", "--no-progress").exit_code == 0
    one = run("train", tmp_path / "d1", "-o", tmp_path / "r1", "--dim", "4", "--epochs", "1", "--no-progress")
    three = run("train", trained / "data", "-o", tmp_path / "r3", "--dim", "4", "--epochs", "1", "--no-progress")
    assert " in 1 partition, " in one.output and " in 3 partitions, " in three.output


def test_info_on_run(trained):
    r = run("info", trained / "run")
    assert r.exit_code == 0
    assert "epochs done: 2" in r.output and "last version: v2" in r.output and "finished: True" in r.output


def test_eval_sampled_is_labelled_and_writes_json(trained, tmp_path):
    out = tmp_path / "m.json"
    r = run("eval", trained / "run", trained / "data", "--split", "test", "--protocol", "sampled",
            "--negatives", "20", "--json", out, "--no-progress")
    assert r.exit_code == 0, r.output
    assert "MRR" in r.output and "sampled: 20 uniform negatives" in r.output and "unfiltered" in r.output
    metrics = json.loads(out.read_text())
    assert metrics["count"] == 50 and 0 < metrics["mrr"] <= 1 and set(metrics["rhs"]) >= {"mrr", "hits@10"}


def test_eval_filtered_by_default_with_per_relation_json_on_stdout(trained):
    r = run("eval", trained / "run", trained / "data", "--per-relation", "--json", "-", "--no-progress")
    assert r.exit_code == 0, r.output
    metrics = json.loads(r.output)
    assert metrics["protocol"].startswith("filtered full ranking against all")
    assert set(metrics) >= {"mrr", "hits@1", "hits@3", "hits@10", "mean_rank", "rhs", "lhs", "relations"}
    assert sum(m["count"] for m in metrics["relations"].values()) == metrics["count"] == 50
    assert metrics["mrr"] == pytest.approx((metrics["rhs"]["mrr"] + metrics["lhs"]["mrr"]) / 2)
    raw = json.loads(run("eval", trained / "run", trained / "data", "--protocol", "raw", "--json", "-",
                         "--no-progress").output)
    assert raw["mrr"] <= metrics["mrr"]  # filtering only ever removes competitors


def test_eval_unknown_split(trained):
    r = run("eval", trained / "run", trained / "data", "--split", "valid")
    assert r.exit_code == 1 and "no split named 'valid'" in error_line(r)


@pytest.mark.parametrize("fmt", ["tsv", "npy", "h5"])
def test_export_rows_equal_nodes_and_match_the_checkpoint(trained, tmp_path, fmt):
    out = tmp_path / "out"
    r = run("export", trained / "run", "-o", out, "--format", fmt, "--no-progress")
    assert r.exit_code == 0, r.output
    run_dir = trained / "run"
    manifest = read_manifest(run_dir, read_current(run_dir))
    facts = json.loads(run("info", trained / "data", "--json").output)
    parts = [read_shard_of(run_dir, manifest, emb_key("node", p)) for p in range(3)]
    if fmt == "tsv":
        lines = (out / "embeddings.tsv").read_text().splitlines()
        assert len(lines) == facts["nodes"]
        first = lines[0].split("\t")
        assert len(first) == 9 and np.allclose([float(x) for x in first[1:]], parts[0][0], rtol=1e-6)
        assert len({line.split("\t")[0] for line in lines}) == facts["nodes"]
    elif fmt == "npy":
        matrix = np.load(out / "embeddings.npy")
        names = (out / "names.txt").read_text().splitlines()
        assert matrix.shape == (facts["nodes"], 8) and len(names) == facts["nodes"]
        assert np.array_equal(matrix, np.concatenate(parts))
    else:
        v = manifest.version
        for p in range(3):
            with h5py.File(out / f"embeddings_node_{p}.v{v}.h5", "r") as f:
                assert np.array_equal(f["embeddings"][...], parts[p])
                assert f.attrs["format_version"] == 1
            names = json.loads((out / f"entity_names_node_{p}.json").read_text())
            assert len(names) == parts[p].shape[0]
            assert int((out / f"entity_count_node_{p}.txt").read_text()) == len(names)
        assert (out / "checkpoint_version.txt").read_text().strip() == str(v)


def test_export_refuses_existing_output(trained, tmp_path):
    (tmp_path / "out").mkdir()
    r = run("export", trained / "run", "-o", tmp_path / "out")
    assert r.exit_code == 1 and "already exists" in error_line(r)


def test_damaged_shard_in_run_is_a_one_line_error(trained, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(trained / "run", run_dir)
    manifest = read_manifest(run_dir, read_current(run_dir))
    damage(run_dir, manifest, emb_key("node", 1))
    r = run("export", run_dir, "-o", tmp_path / "out", "--format", "npy")
    assert r.exit_code == 1
    assert "emb_node_1.zarr: shard checksum mismatch" in error_line(r)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    r = run("eval", run_dir, trained / "data")
    assert r.exit_code == 1 and "emb_node_1.zarr" in error_line(r)


@pytest.mark.parametrize(
    "content, message",
    [("a\tr\tb\nnot-enough\n", "e.tsv:2: expected at least 3 fields"), ("", "e.tsv: no edges"),
     ("a\tr\n", "e.tsv:1: expected at least 3 fields")],
)
def test_import_bad_files(tmp_path, content, message):
    (tmp_path / "e.tsv").write_text(content)
    r = run("import", tmp_path / "e.tsv", "-o", tmp_path / "data", "--no-progress")
    assert r.exit_code == 1 and message in error_line(r)
    assert not (tmp_path / "data").exists()


def test_import_missing_file(tmp_path):
    r = run("import", tmp_path / "nope.tsv", "-o", tmp_path / "data")
    assert r.exit_code == 1 and "nope.tsv: cannot open" in error_line(r)


@pytest.mark.parametrize("args", [["import", "--bogus"], ["train", "x", "-o", "y", "--frobnicate"],
                                  ["import", "a.tsv", "-o", "d", "--split", "novalue"], ["nosuchverb"]])
def test_usage_errors_exit_2(args):
    r = run(*args)
    assert r.exit_code == 2


@pytest.mark.parametrize("args, line", [
    (["import", "--overwrit"],
     "error: No such option '--overwrit'. Did you mean '--overwrite'? (see `bigembed import --help`)"),
    (["nosuchverb"], "error: No such command 'nosuchverb' (see `bigembed --help`)"),
    (["--bogus"], "error: No such option '--bogus' (see `bigembed --help`)"),
    (["train"], "error: Missing argument 'DATA' (see `bigembed train --help`)"),
    (["export", "r", "-o", "o", "--format", "xml"],
     "error: Invalid value for '--format': 'xml' is not one of 'tsv', 'npy', 'h5', 'parquet', 'faiss', 'projector' "
     "(see `bigembed export --help`)"),
    (["import", "-o", "d"], "error: give at least one edge file (EDGES or --split NAME=FILE) "
                            "(see `bigembed import --help`)"),
])
def test_usage_errors_are_one_line_naming_the_help_to_read(args, line):
    r = run(*args)
    assert r.exit_code == 2
    assert r.output.splitlines() == [line]  # no "Usage:" or "Try" lines


def test_the_bare_command_still_prints_its_help():
    r = run()
    assert "Usage:" in r.output and "Commands:" in r.output and "error:" not in r.output


def test_train_on_missing_data_dir(tmp_path):
    r = run("train", tmp_path / "nothing", "-o", tmp_path / "run")
    assert r.exit_code == 1 and "nothing: no such DATA directory" in error_line(r)
    assert not (tmp_path / "run").exists()


def test_train_bad_config_writes_nothing(trained, tmp_path):
    r = run("train", trained / "data", "-o", tmp_path / "run", "--set", "training.lr=-1")
    assert r.exit_code == 1 and "training.lr: must be > 0.0, got -1.0" in error_line(r)
    r = run("train", trained / "data", "-o", tmp_path / "run", "--set", "model.colour=red")
    assert r.exit_code == 1 and "model.colour: unknown key" in error_line(r)
    assert not (tmp_path / "run").exists()


def test_train_conflict_message(trained, tmp_path):
    r = run("train", trained / "data", "-o", trained / "run", "--lr", "0.3", "--epochs", "3")
    assert r.exit_code == 1 and "training.lr (saved 0.1, now 0.3)" in error_line(r)


def test_info_on_other_directory(tmp_path):
    r = run("info", tmp_path)
    assert r.exit_code == 1 and "neither a DATA directory" in error_line(r)


def test_generate_and_bad_generate(tmp_path):
    r = run("generate", "-o", tmp_path / "g", "--nodes", "50", "--edges", "500", "--no-progress")
    assert r.exit_code == 0 and (tmp_path / "g" / "train.tsv").exists()
    r = run("generate", "-o", tmp_path / "h", "--nodes", "1")
    assert r.exit_code == 1 and "--nodes must be >= 2" in error_line(r)


def test_config_help_lists_keys():
    r = run("config-help")
    assert r.exit_code == 0 and "training.lr" not in r.output and "lr (float, default 0.1)" in r.output


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    r = run("demo", "-o", tmp_path / "demo", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "demo: test MRR" in r.output and (tmp_path / "demo" / "export" / "embeddings.tsv").exists()
    r = run("demo", "-o", tmp_path)  # not a demo folder: refused, nothing deleted
    assert r.exit_code == 1 and "was not made by `bigembed demo`" in error_line(r)
    assert (tmp_path / "demo").exists()


def test_help_does_not_import_torch():
    code = "import sys; from bigembed.cli.main import cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_export_with_moved_data_and_eval_with_wrong_data(trained, tmp_path):
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(trained / "data", moved / "data")
    shutil.copytree(trained / "run", moved / "run")
    r = run("export", moved / "run", "-o", tmp_path / "out", "--data", moved / "data", "--no-progress")
    assert r.exit_code == 0, r.output
    other = tmp_path / "other.tsv"
    write_tiny_graph(other, seed=9, nodes=20)
    assert run("import", other, "-o", tmp_path / "otherdata", "-p", "3").exit_code == 0
    r = run("eval", trained / "run", tmp_path / "otherdata", "--split", "train")
    assert r.exit_code == 1 and "entity_counts differ" in error_line(r)


def test_info_summarises_the_last_epoch_and_skips_a_torn_line(trained, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(trained / "run", run_dir)
    with open(run_dir / "stats.jsonl", "a") as f:
        f.write('{"epoch": 1, "bucket_ind')  # what a kill in mid-write leaves
    facts = json.loads(run("info", run_dir, "--json").output)
    last = facts["last epoch trained"]
    assert last["epoch"] == 2 and last["edges"] == 400 and last["edges/s"] > 0 and last["mean loss"] >= 0


def test_eval_and_export_pick_a_version(trained, tmp_path):
    r = run("eval", trained / "run", trained / "data", "--version", "best", "--no-progress")
    assert r.exit_code == 1 and "no validation results" in error_line(r)
    r = run("eval", trained / "run", trained / "data", "--version", "latest", "--no-progress")
    assert r.exit_code == 1 and "--version 'latest': expected last, best, or a version" in error_line(r)
    r = run("eval", trained / "run", trained / "data", "--version", "v1", "--json", "-", "--no-progress")
    assert r.exit_code == 0 and json.loads(r.output)["version"] == 1
    out = tmp_path / "v1"
    r = run("export", trained / "run", "-o", out, "--format", "npy", "--version", "v1", "--no-progress")
    assert r.exit_code == 0, r.output
    manifest = read_manifest(trained / "run", 1)
    assert np.allclose(np.load(out / "embeddings.npy")[:2], read_shard_of(trained / "run", manifest,
                                                                        emb_key("node", 0))[:2])
    layout = json.loads((out / "relations.json").read_text())["relations"]
    assert [r["name"] for r in layout] == ["r0", "r1", "r2", "r0 (inverse)", "r1 (inverse)", "r2 (inverse)"]


def test_commands_that_end_the_process_at_once_still_flush_everything_and_keep_their_exit_codes(tmp_path):
    """train, eval and export leave with os._exit (skipping 0.3 s of module teardown): their
    output must still all arrive through pipes, and their exit codes stay 0 and 1."""
    write_tiny_graph(tmp_path / "e.tsv", edges=300)
    bigembed = [sys.executable, "-m", "bigembed"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*bigembed, *args], capture_output=True, text=True, timeout=300)

    assert run("import", str(tmp_path / "e.tsv"), "--split", f"test={tmp_path / 'e.tsv'}", "-o",
               str(tmp_path / "d"), "--no-progress").returncode == 0
    done = run("train", str(tmp_path / "d"), "-o", str(tmp_path / "run"), "--dim", "8", "--epochs", "2",
               "--no-progress")
    assert done.returncode == 0, done.stderr
    assert done.stderr.rstrip().endswith("done: v2, 2 epochs trained")
    assert (tmp_path / "run" / "CURRENT").read_text().strip() == "v2"
    assert sum('"bucket_index"' in line for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()) == 2
    ev = run("eval", str(tmp_path / "run"), str(tmp_path / "d"), "--split", "test", "--no-progress", "--json", "-")
    assert ev.returncode == 0 and json.loads(ev.stdout)["split"] == "test"
    refused = run("train", str(tmp_path / "d"), "-o", str(tmp_path / "run"), "--dim", "6", "--no-progress")
    assert refused.returncode == 1 and refused.stderr.startswith("error: ") and "model.dim" in refused.stderr


def test_the_command_line_makes_openmp_threads_sleep_not_spin_unless_told_otherwise():
    """Spinning intra-op threads cost 3x the CPU and wall time with the cores shared
    (benchmarks/contention.py): the CLI sets OMP_WAIT_POLICY=PASSIVE before torch loads, and
    keeps a value the user set."""
    code = "import os, bigembed.cli.main; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, check=True)
    assert out.stdout.strip() == "ACTIVE"


def test_off_a_terminal_train_logs_plain_progress_lines(tmp_path):
    """stderr is a pipe here, as under nohup or a batch scheduler: no bar, but a line every
    --log-every seconds with the share done, the rate, the ETA, the bucket and the loss;
    --log-every 0 prints none; each epoch's line gives its duration and rate."""
    write_tiny_graph(tmp_path / "e.tsv", edges=3000)
    bigembed = [sys.executable, "-m", "bigembed"]
    assert subprocess.run([*bigembed, "import", str(tmp_path / "e.tsv"), "-o", str(tmp_path / "d"), "-p", "2",
                           "--no-progress"], capture_output=True, timeout=300).returncode == 0
    lines = {}
    for every in ("0.000001", "0"):
        done = subprocess.run([*bigembed, "train", str(tmp_path / "d"), "-o", str(tmp_path / f"run{every}"),
                               "--dim", "8", "--epochs", "1", "--log-every", every],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        lines[every] = [line for line in done.stderr.splitlines() if line.startswith("epoch 1/1")]
    plain = [line for line in lines["0.000001"] if "ETA" in line]
    assert plain, lines
    assert all("%" in line and "edges/s" in line and "bucket" in line and "loss" in line for line in plain[1:])
    assert not [line for line in lines["0"] if "ETA" in line]
    epoch_line = [line for line in lines["0"] if "committed" in line]
    assert len(epoch_line) == 1 and " s (" in epoch_line[0] and "edges/s)" in epoch_line[0]
