"""End to end: training learns planted structure, resumes after kill -9, refuses conflicts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bigembed.checkpoint import read_current, read_manifest, read_shard_of
from bigembed.checkpoint.versions import list_versions
from bigembed.config import load_config
from bigembed.errors import BigembedError, CheckpointError, ConfigConflictError
from bigembed.evaluation import evaluate_sampled
from bigembed.generator import GraphSpec, write_graph
from bigembed.storage.data_manifest import read_data_manifest
from bigembed.training import train
from tests.checkpoint.test_versions import damage
from tests.conftest import import_files

pytestmark = pytest.mark.slow

SPEC = GraphSpec(nodes=1500, edges=30000, relations=3, communities=15, seed=3)


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> dict[str, Path]:
    return write_graph(SPEC, tmp_path_factory.mktemp("graph"))


@pytest.fixture(scope="module")
def data4(graph, tmp_path_factory) -> Path:
    return import_files(tmp_path_factory.mktemp("d4") / "data", graph, 4)


@pytest.fixture(scope="module")
def data1(graph, tmp_path_factory) -> Path:
    return import_files(tmp_path_factory.mktemp("d1") / "data", graph, 1)


def final_arrays(run: Path) -> dict[str, np.ndarray]:
    manifest = read_manifest(run, read_current(run))
    return {key: read_shard_of(run, manifest, key) for key in manifest.shards}


def test_mrr(run: Path, data: Path, overrides: dict) -> float:
    manifest = read_manifest(run, read_current(run))
    config = load_config(overrides=overrides)
    return evaluate_sampled(run, manifest, read_data_manifest(data), config, "test", 100)["mrr"]


test_mrr.__test__ = False  # a helper, not a test

OVERRIDES = {"model.dim": 32, "training.epochs": 5}


def quiet(_msg: str) -> None:
    pass


def test_partitioned_training_beats_random_and_matches_one_partition(tmp_path, data1, data4):
    train(data4, tmp_path / "random", None, {**OVERRIDES, "training.epochs": 0}, log=quiet)
    train(data4, tmp_path / "p4", None, OVERRIDES, log=quiet)
    train(data1, tmp_path / "p1", None, OVERRIDES, log=quiet)
    random_mrr = test_mrr(tmp_path / "random", data4, OVERRIDES)
    mrr4 = test_mrr(tmp_path / "p4", data4, OVERRIDES)
    mrr1 = test_mrr(tmp_path / "p1", data1, OVERRIDES)
    assert random_mrr < 0.1
    assert mrr4 > random_mrr + 0.15, (mrr4, random_mrr)
    assert abs(mrr1 - mrr4) < 0.05, (mrr1, mrr4)


def test_beta_order_with_three_partitions_in_memory_trains_each_bucket_once_per_epoch(tmp_path, data1, data4):
    overrides = {**OVERRIDES, "training.bucket_order": "beta", "training.buffer_partitions": 3}
    train(data4, tmp_path / "beta", None, overrides, log=quiet)
    records = [json.loads(line) for line in (tmp_path / "beta" / "stats.jsonl").read_text().splitlines()]
    dm = read_data_manifest(data4)
    nonempty = sorted((int(k.split("_")[0]), int(k.split("_")[1])) for k, c in dm.bucket_counts["train"].items() if c)
    for epoch in range(OVERRIDES["training.epochs"]):
        trained = sorted((r["lhs"], r["rhs"]) for r in records if r.get("epoch") == epoch and "lhs" in r)
        assert trained == nonempty
    train(data1, tmp_path / "p1", None, OVERRIDES, log=quiet)
    # P=4's sampled MRR (negatives from the true node's partition) sits 0.01-0.055 above P=1's over
    # graph seeds and partition assignments (two-pass and one-pass importers alike): 0.08 allows that
    assert abs(test_mrr(tmp_path / "beta", data4, OVERRIDES) - test_mrr(tmp_path / "p1", data1, OVERRIDES)) < 0.08


def test_edge_chunks_visit_every_bucket_n_times_and_every_edge_once(tmp_path, data4):
    overrides = {**OVERRIDES, "training.epochs": 2, "training.edge_chunks": 3}
    train(data4, tmp_path / "chunks", None, overrides, log=quiet)
    records = [json.loads(line) for line in (tmp_path / "chunks" / "stats.jsonl").read_text().splitlines()]
    counts = read_data_manifest(data4).bucket_counts["train"]
    for epoch in range(2):
        visits = [r for r in records if r.get("epoch") == epoch and "lhs" in r]
        for key, count in counts.items():
            lhs, rhs = (int(x) for x in key.split("_"))
            mine = [r for r in visits if (r["lhs"], r["rhs"]) == (lhs, rhs)]
            if count:
                assert sorted(r["edge_chunk"] for r in mine) == [0, 1, 2]
                assert sum(r["edges"] for r in mine) == count
            else:
                assert not mine
        # the second pass runs the order backwards
        first_pass = [(r["lhs"], r["rhs"]) for r in visits if r["edge_chunk"] == 0]
        second_pass = [(r["lhs"], r["rhs"]) for r in visits if r["edge_chunk"] == 1]
        assert second_pass == first_pass[::-1]


def test_negatives_from_all_partitions_need_them_all_in_memory(tmp_path, data4):
    with pytest.raises(BigembedError, match=r"negative_partitions = all needs training.buffer_partitions >= 4"):
        train(data4, tmp_path / "run", None, {**OVERRIDES, "training.negative_partitions": "all"}, log=quiet)
    assert not (tmp_path / "run").exists()


def cli_train(data: Path, run: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bigembed.cli.main", "train", str(data), "-o", str(run), "--dim", "16",
           "--epochs", "3", "--no-progress", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_after(proc: subprocess.Popen, stats: Path, lines: int, timeout: float = 120) -> None:
    """SIGKILL ``proc`` once ``stats`` has at least ``lines`` lines; fail if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stats.exists() and stats.read_text().count("\n") >= lines:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def finish(proc: subprocess.Popen) -> str:
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return err


BETA_C3 = ("--set", "training.bucket_order=beta", "--set", "training.buffer_partitions=3")
# negatives from every partition (all 4 in memory) and two passes over the buckets per epoch
ALL_NEGS_CHUNKS = ("--set", "training.buffer_partitions=4", "--set", "training.negative_partitions=all",
                   "--set", "training.edge_chunks=2")


@pytest.mark.parametrize("order", [(), BETA_C3, ALL_NEGS_CHUNKS])
def test_deterministic_kill_and_resume_is_bit_identical(tmp_path, data4, order):
    args = ("--deterministic", "--set", "checkpoint.interval_seconds=0", *order)
    finish(cli_train(data4, tmp_path / "straight", *args))
    run = tmp_path / "killed"
    for lines in (3, 11, 26):  # three kills at different moments
        kill_after(cli_train(data4, run, *args), run / "stats.jsonl", lines)
    err = finish(cli_train(data4, run, *args))
    assert "resuming" in err
    a, b = final_arrays(tmp_path / "straight"), final_arrays(run)
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_hogwild_kill_at_random_moments_resumes_to_completion(tmp_path, data4):
    run = tmp_path / "run"
    rng = np.random.default_rng(0)
    args = ("--workers", "2", "--set", "checkpoint.interval_seconds=0")
    for _ in range(3):
        kill_after(cli_train(data4, run, *args), run / "stats.jsonl", int(rng.integers(1, 40)))
        # After any kill, the committed version is whole: every shard verifies.
        manifest = read_manifest(run, read_current(run))
        for key in manifest.shards:
            read_shard_of(run, manifest, key)
    finish(cli_train(data4, run, *args))
    manifest = read_manifest(run, read_current(run))
    assert manifest.position.epoch == 3
    assert [v for v in list_versions(run) if v > manifest.version] == []


def test_a_run_saved_before_a_setting_existed_resumes_with_the_value_it_was_trained_with(tmp_path, data4):
    """A config.json written before model.softmax_correction existed lacks the key; that run
    trained without the correction, so resuming keeps it off and is not a conflict."""
    run = tmp_path / "run"
    train(data4, run, None, {"model.dim": 8, "training.epochs": 1}, log=quiet)
    raw = json.loads((run / "config.json").read_text())
    assert raw["config"]["model"].pop("softmax_correction") is True
    (run / "config.json").write_text(json.dumps(raw))
    messages: list[str] = []
    train(data4, run, None, {"training.epochs": 2}, log=messages.append)
    assert any("resuming" in m for m in messages)
    assert json.loads((run / "config.json").read_text())["config"]["model"]["softmax_correction"] is False
    assert read_manifest(run, read_current(run)).position.epoch == 2


def test_resume_refuses_conflicting_settings_unless_override(tmp_path, data4):
    run = tmp_path / "run"
    train(data4, run, None, {"model.dim": 8, "training.epochs": 1}, log=quiet)
    with pytest.raises(ConfigConflictError, match=r"training.lr \(saved 0.1, now 0.5\).*--override"):
        train(data4, run, None, {"training.lr": 0.5, "training.epochs": 2}, log=quiet)
    with pytest.raises(ConfigConflictError, match="cannot change model.dim"):
        train(data4, run, None, {"model.dim": 10}, override=True, log=quiet)
    messages: list[str] = []
    train(data4, run, None, {"training.lr": 0.5, "training.epochs": 2}, override=True, log=messages.append)
    assert any("resuming" in m for m in messages)
    saved = json.loads((run / "config.json").read_text())["config"]
    assert saved["training"]["lr"] == 0.5 and saved["model"]["dim"] == 8
    messages.clear()
    train(data4, run, None, {}, log=messages.append)  # nothing given: saved settings, already done
    assert any("already trained 2 epochs" in m for m in messages)


def test_resume_with_a_different_graph_is_refused(tmp_path, data1, data4):
    run = tmp_path / "run"
    train(data4, run, None, {"model.dim": 8, "training.epochs": 1}, log=quiet)
    with pytest.raises(ConfigConflictError, match="entity_counts differ"):
        train(data1, run, None, {"training.epochs": 2}, log=quiet)


def test_damaged_shard_falls_back_to_previous_version(tmp_path, data4):
    run = tmp_path / "run"
    train(data4, run, None, {"model.dim": 8, "training.epochs": 2}, log=quiet)
    manifest = read_manifest(run, read_current(run))
    key = next(k for k, e in manifest.shards.items() if e["path"].startswith(f"checkpoints/v{manifest.version}/"))
    damage(run, manifest, key)
    messages: list[str] = []
    train(data4, run, None, {"training.epochs": 3}, log=messages.append)
    assert any("checksum mismatch" in m and "falling back to v1" in m for m in messages), messages
    assert read_manifest(run, read_current(run)).position.epoch == 3


def test_full_disk_during_commit_keeps_the_last_version_whole(tmp_path, data4, monkeypatch):
    import errno

    from bigembed.storage import shards

    run = tmp_path / "run"
    train(data4, run, None, {"model.dim": 8, "training.epochs": 1}, log=quiet)
    good = read_manifest(run, read_current(run))
    real_write = shards._write_raw  # writes a shard's chunk files
    calls = {"n": 0}

    def flaky_write(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(shards, "_write_raw", flaky_write)
    with pytest.raises(CheckpointError) as info:
        train(data4, run, None, {"training.epochs": 2}, log=quiet)
    assert "No space left on device" in str(info.value) and "\n" not in str(info.value)
    assert ".zarr" in str(info.value)
    assert read_current(run) == good.version
    for key in good.shards:
        read_shard_of(run, good, key)
    monkeypatch.setattr(shards, "_write_raw", real_write)
    train(data4, run, None, {"training.epochs": 2}, log=quiet)
    assert read_manifest(run, read_current(run)).position.epoch == 2


def test_sigterm_finishes_the_bucket_and_commits(tmp_path, data4):
    run = tmp_path / "run"
    # Default interval (300 s): without the graceful stop, nothing after v0 would be committed.
    proc = cli_train(data4, run, "--epochs", "50")
    deadline = time.monotonic() + 120
    while not ((run / "stats.jsonl").exists() and (run / "stats.jsonl").read_text().count("\n") >= 5):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "SIGTERM: finishing the current slab" in err and "rerun the same command to resume" in err
    manifest = read_manifest(run, read_current(run))
    trained = (run / "stats.jsonl").read_text().count('"bucket_index"')  # the bucket lines, not the start line
    assert manifest.version >= 1
    assert manifest.position.epoch * 16 + manifest.position.bucket >= trained  # nothing trained was lost
    err = finish(cli_train(data4, run, "--epochs", "1"))
    assert "already trained" in err or "resuming" in err


def test_killed_before_the_first_commit_starts_over(tmp_path, data4):
    run = tmp_path / "run"
    train(data4, run, None, {"model.dim": 8, "training.epochs": 1}, log=quiet)
    # What a kill during v0's creation leaves: config.json, a half-written v0, no CURRENT.
    (run / "CURRENT").unlink()
    (run / "checkpoints" / "v0" / "manifest.json").unlink()
    for v in list_versions(run)[1:]:
        shutil.rmtree(run / "checkpoints" / f"v{v}")
    messages: list[str] = []
    train(data4, run, None, {"training.epochs": 1}, log=messages.append)
    assert any("starting over" in m for m in messages)
    assert read_manifest(run, read_current(run)).position.epoch == 1


def test_lost_current_falls_back_to_the_newest_verified_version_and_deletes_nothing(tmp_path, data4):
    run = tmp_path / "run"
    train(data4, run, None, {"model.dim": 8, "training.epochs": 1}, log=quiet)
    before = list_versions(run)
    (run / "CURRENT").unlink()
    messages: list[str] = []
    train(data4, run, None, {"training.epochs": 1}, log=messages.append)
    assert any("CURRENT: missing; falling back to v1" in m for m in messages), messages
    assert read_current(run) == 1 and list_versions(run) == before


def test_a_second_trainer_on_the_same_run_is_refused(tmp_path, data4):
    from bigembed.checkpoint.run import exclusive_run
    from bigembed.errors import BigembedError

    run = tmp_path / "run"
    train(data4, run, None, {"model.dim": 8, "training.epochs": 1}, log=quiet)
    # As if another `bigembed train` held the RUN:
    with exclusive_run(run), pytest.raises(BigembedError, match=rf"is being trained by pid {os.getpid()}"):
        train(data4, run, None, {"training.epochs": 2}, log=quiet)
    train(data4, run, None, {"training.epochs": 2}, log=quiet)  # released: resumes
    assert read_manifest(run, read_current(run)).position.epoch == 2


def test_a_stop_during_the_last_bucket_counts_as_finished(tmp_path, data4, monkeypatch):
    from bigembed.trainer.bucket import BucketTrainer

    real = BucketTrainer.train_bucket
    calls = {"n": 0}
    buckets = sum(1 for c in read_data_manifest(data4).bucket_counts["train"].values() if c)

    def signal_on_last(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == buckets:  # the last non-empty bucket of the only epoch
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(BucketTrainer, "train_bucket", signal_on_last)
    messages: list[str] = []
    result = train(data4, tmp_path / "run", None, {"model.dim": 8, "training.epochs": 1}, log=messages.append)
    assert not result.stopped and result.epochs_done == 1
    assert not any("rerun the same command" in m for m in messages)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_storage_learns_like_float32_in_half_the_bytes(tmp_path, data4, dtype):
    import h5py
    from click.testing import CliRunner

    from bigembed.cli.main import cli
    from bigembed.storage.dtypes import dtype_name, to_float32

    half = {**OVERRIDES, "training.storage_dtype": dtype}
    train(data4, tmp_path / "f32", None, OVERRIDES, log=quiet)
    train(data4, tmp_path / "half", None, half, log=quiet)
    train(data4, tmp_path / "random", None, {**half, "training.epochs": 0}, log=quiet)
    mrr32, mrr_half = test_mrr(tmp_path / "f32", data4, OVERRIDES), test_mrr(tmp_path / "half", data4, half)
    assert mrr_half > test_mrr(tmp_path / "random", data4, half) + 0.15
    assert abs(mrr_half - mrr32) < 0.03, (mrr_half, mrr32)
    f32, h = final_arrays(tmp_path / "f32"), final_arrays(tmp_path / "half")
    for key in f32:
        if key.startswith("emb/"):
            assert dtype_name(h[key]) == dtype and h[key].nbytes * 2 == f32[key].nbytes, key
        else:  # optimizer state stays float32
            assert h[key].dtype == np.float32, key
    runner = CliRunner()
    for fmt in ("npy", "h5"):
        r = runner.invoke(cli, ["export", str(tmp_path / "half"), "-o", str(tmp_path / fmt), "--format", fmt])
        assert r.exit_code == 0, r.output
    data = read_data_manifest(data4)
    stored = [to_float32(h[f"emb/node/{p}"]) for p in range(data.num_partitions)]
    exported = np.load(tmp_path / "npy" / "embeddings.npy")
    assert exported.dtype == np.float32 and np.array_equal(exported, np.concatenate(stored))
    version = read_current(tmp_path / "half")
    with h5py.File(tmp_path / "h5" / f"embeddings_node_3.v{version}.h5") as f:
        assert f["embeddings"].dtype == np.float32 and np.array_equal(f["embeddings"][...], stored[3])


def test_half_precision_resumes_and_its_dtype_cannot_change(tmp_path, data4):
    run = tmp_path / "run"
    settings = {"model.dim": 8, "training.epochs": 1, "training.storage_dtype": "bfloat16"}
    train(data4, run, None, settings, log=quiet)
    train(data4, run, None, {"training.epochs": 2}, log=quiet)  # resumes with the saved bfloat16
    assert read_manifest(run, read_current(run)).position.epoch == 2
    assert final_arrays(run)["emb/node/0"].dtype == np.uint16  # bfloat16 bits
    with pytest.raises(ConfigConflictError, match="cannot change training.storage_dtype"):
        train(data4, run, None, {"training.storage_dtype": "float32", "training.epochs": 3}, override=True,
              log=quiet)
    # a config.json edited by hand to disagree with the shards: refused, naming the partition
    path = run / "config.json"
    saved = json.loads(path.read_text())
    saved["config"]["training"]["storage_dtype"] = "float16"
    path.write_text(json.dumps(saved))
    before = read_current(run)
    with pytest.raises(CheckpointError, match=r"run: partition \d's embeddings are stored as bfloat16, but the run's "
                                              "training.storage_dtype is float16"):
        train(data4, run, None, {"training.epochs": 3}, log=quiet)
    assert read_current(run) == before


def test_partitions_evicted_and_loaded_again_train_as_if_they_had_stayed(tmp_path, data4):
    """A buffer of 2 (partitions written back and read again, the next load reusing the
    memory of the one just evicted) and a buffer holding all 4 (no swaps) end bit-identical
    under --deterministic, with negatives from the answer's partition in both."""
    common = ("--deterministic", "--set", "training.negative_partitions=answer")
    finish(cli_train(data4, tmp_path / "c2", *common, "--set", "training.buffer_partitions=2"))
    err = finish(cli_train(data4, tmp_path / "c4", *common, "--set", "training.buffer_partitions=4"))
    a, b = final_arrays(tmp_path / "c2"), final_arrays(tmp_path / "c4")
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    assert "partition loads" in err
