"""Resume never loses work and never trusts a damaged or foreign checkpoint (issue: never
silently wrong, never lost): a CURRENT that is missing, damaged or names a removed version,
impossible positions, paths that leave the RUN, divergence, commits inside a bucket."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from bigembed.checkpoint import read_current, read_manifest, read_shard_of
from bigembed.checkpoint.versions import list_versions, version_dir
from bigembed.errors import BigembedError, CheckpointError, ConfigError, TrainingDivergedError
from bigembed.trainer import bucket as bucket_module
from bigembed.training import train
from tests.conftest import import_files, write_tiny_graph

BASE = {"model.dim": 8, "training.deterministic": True, "checkpoint.keep_versions": 2}


def quiet(_message: str) -> None:
    pass


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "edges.tsv"
    write_tiny_graph(path, edges=400)
    valid = tmp_path / "valid.tsv"
    write_tiny_graph(valid, edges=20, seed=9)
    return import_files(tmp_path / "data", {"train": path, "valid": valid}, 2)


def arrays(run: Path) -> dict[str, np.ndarray]:
    manifest = read_manifest(run, read_current(run))
    return {key: read_shard_of(run, manifest, key) for key in manifest.shards}


def trained_run(tmp_path: Path, data: Path, epochs: int = 3, **extra) -> Path:
    run = tmp_path / "run"
    train(data, run, None, {**BASE, "training.epochs": epochs, **extra}, log=quiet)
    return run


def test_current_naming_a_removed_version_resumes_from_the_newest_and_deletes_nothing(tmp_path, data):
    run = trained_run(tmp_path, data)
    kept = list_versions(run)
    assert len(kept) >= 2 and 0 not in kept  # v0 was garbage-collected
    (run / "CURRENT").write_text("v0\n")
    messages: list[str] = []
    train(data, run, None, {**BASE, "training.epochs": 3}, log=messages.append)
    assert list_versions(run) == kept  # nothing deleted
    assert read_current(run) == kept[-1]
    assert any("names v0, which does not exist; falling back to" in m for m in messages), messages


@pytest.mark.parametrize("damage", ["bad-utf8", "directory", "garbage", "empty"])
def test_unreadable_current_falls_back_with_one_line(tmp_path, data, damage):
    run = trained_run(tmp_path, data)
    newest = read_current(run)
    current = run / "CURRENT"
    current.unlink()
    if damage == "bad-utf8":
        current.write_bytes(b"v\xff\xfe\n")
    elif damage == "directory":
        current.mkdir()
    elif damage == "garbage":
        current.write_text("hello")
    else:
        current.write_bytes(b"")
    messages: list[str] = []
    train(data, run, None, {**BASE, "training.epochs": 4}, log=messages.append)
    warning = next(m for m in messages if m.startswith("warning:"))
    assert "CURRENT" in warning and f"falling back to v{newest}" in warning and "\n" not in warning
    assert read_manifest(run, read_current(run)).position.epoch == 4


@pytest.mark.parametrize("position", [{"epoch": -1, "bucket": 0}, {"epoch": 1, "bucket": 99},
                                      {"epoch": 1, "bucket": 0, "slab": 7}])
def test_impossible_position_falls_back_to_the_previous_version(tmp_path, data, position):
    run = trained_run(tmp_path, data)
    newest = read_current(run)
    path = version_dir(run, newest) / "manifest.json"
    raw = json.loads(path.read_text())
    raw["position"] = position
    path.write_text(json.dumps(raw))
    if position["bucket"] >= 0 and position.get("slab", 0) == 0:  # eval can tell with DATA alone
        from click.testing import CliRunner

        from bigembed.cli.main import cli

        result = CliRunner().invoke(cli, ["eval", str(run), str(data), "--split", "valid", "--no-progress"])
        assert result.exit_code == 1 and "impossible training position" in result.output, result.output
    messages: list[str] = []
    train(data, run, None, {**BASE, "training.epochs": 4}, log=messages.append)
    assert any("impossible training position" in m and "falling back to" in m for m in messages), messages
    assert read_manifest(run, read_current(run)).position.epoch == 4


@pytest.mark.parametrize("where", ["../../../etc/passwd", "/etc/passwd"])
def test_a_shard_path_outside_the_run_is_refused(tmp_path, data, where):
    run = trained_run(tmp_path, data)
    newest = read_current(run)
    path = version_dir(run, newest) / "manifest.json"
    raw = json.loads(path.read_text())
    key = next(iter(raw["shards"]))
    raw["shards"][key]["path"] = where
    path.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="leaves the RUN directory"):
        read_manifest(run, newest)
    messages: list[str] = []
    train(data, run, None, {**BASE, "training.epochs": 4}, log=messages.append)
    assert any("leaves the RUN directory" in m and "falling back to" in m for m in messages)


def test_a_shard_linked_outside_the_run_is_refused(tmp_path, data):
    run = trained_run(tmp_path, data)
    manifest = read_manifest(run, read_current(run))
    key = next(iter(manifest.shards))
    shard = run / manifest.shards[key]["path"]
    outside = tmp_path / "elsewhere.zarr"
    shard.rename(outside)
    shard.symlink_to(outside)
    with pytest.raises(CheckpointError, match="outside the RUN"):
        read_shard_of(run, manifest, key)


RANKING_STEP = {"model.loss": "ranking", "model.operator": "none", "model.reciprocal": False,
                "model.regularizer": "none", "training.batch_negatives": True, "training.chunk_size": 10}


@pytest.mark.parametrize("step", ["defaults", "ranking"])  # ranking: the C ranking kernel's own path
@pytest.mark.parametrize("kernels", ["native", "torchscript"])
def test_divergence_stops_naming_the_bucket_and_commits_nothing(tmp_path, data, kernels, step):
    """With either kernels (they agree on it): a loss gone infinite or NaN stops training."""
    if kernels == "native":
        from bigembed.trainer import native

        if native.library() is None:
            pytest.skip("no C compiler on this machine")
    settings = {**BASE, **(RANKING_STEP if step == "ranking" else {})}
    run = trained_run(tmp_path, data, epochs=1, **(RANKING_STEP if step == "ranking" else {}))
    good = read_current(run)
    with pytest.raises(TrainingDivergedError) as info:
        train(data, run, None, {**settings, "training.epochs": 3, "training.lr": 1e30,
                                "training.kernels": kernels}, override=True, log=quiet)
    message = str(info.value)
    assert "bucket" in message and "partitions" in message and f"v{good} stays CURRENT" in message
    assert "\n" not in message
    assert read_current(run) == good
    assert all(np.isfinite(a).all() for a in arrays(run).values())


def test_eval_every_without_a_valid_split_is_refused_before_any_work(tmp_path):
    path = tmp_path / "edges.tsv"
    write_tiny_graph(path)
    only_train = import_files(tmp_path / "d", {"train": path}, 1)
    run = tmp_path / "run"
    with pytest.raises(BigembedError, match=r"training.eval_every.*no split named 'valid'"):
        train(only_train, run, None, {**BASE, "training.eval_every": 1}, log=quiet)
    assert not (run / "config.json").exists()


def test_a_dimension_that_cannot_fit_is_refused_before_anything_is_written(tmp_path, data):
    run = tmp_path / "run"
    with pytest.raises(BigembedError, match=r"model.dim.*needs about .*available"):
        train(data, run, None, {**BASE, "model.dim": 100_000_000}, log=quiet)
    assert not (run / "checkpoints").exists()


def test_too_many_negatives_are_refused_before_training(tmp_path, data):
    with pytest.raises(BigembedError, match=r"training.negatives.*needs about"):
        train(data, tmp_path / "run", None, {**BASE, "training.negatives": 100_000_000}, log=quiet)


def test_a_run_with_nothing_committed_accepts_a_new_config(tmp_path, data):
    run = tmp_path / "run"
    train(data, run, None, {**BASE, "training.epochs": 1}, log=quiet)
    # what a first start that died before committing v0 leaves: config.json only
    for v in list_versions(run):
        import shutil

        shutil.rmtree(version_dir(run, v))
    (run / "CURRENT").unlink()
    train(data, run, None, {**BASE, "model.dim": 6, "training.epochs": 1}, log=quiet)
    assert read_manifest(run, read_current(run)).shards["emb/node/0"]["shape"][1] == 6


@pytest.mark.parametrize("partitions, extra", [
    (1, {}),
    # a background prefetch beside the commits, and every partition a source of negatives
    (4, {"training.bucket_order": "beta", "training.buffer_partitions": 3}),
    (3, {"training.buffer_partitions": 3, "training.negative_partitions": "all", "training.edge_chunks": 2}),
])
def test_commits_inside_a_bucket_and_resume_is_bit_identical(tmp_path, data, monkeypatch, partitions, extra):
    """Commits (every slab with interval 0) and a crash land inside buckets, and the resumed
    run ends bit-identical to an uninterrupted one (at P=1 the whole epoch is one bucket)."""
    monkeypatch.setattr(bucket_module, "SLAB_EDGES", 64 if partitions == 1 else 8)
    one = import_files(tmp_path / "d1", {"train": tmp_path / "edges.tsv"}, partitions)
    settings = {**BASE, "training.epochs": 2, "checkpoint.interval_seconds": 0, **extra}
    straight = tmp_path / "straight"
    train(one, straight, None, settings, log=quiet)

    class Crash(Exception):
        pass

    def crash_at_third_slab_commit(message: str) -> None:
        # the first commit inside a bucket from v3 on (which buckets are big enough to have
        # several slabs depends on how the import dealt nodes to partitions)
        version = message.split()[1] if message.startswith("committed v") else "v0"
        if int(version[1:]) >= 3 and "slab" in message:
            raise Crash

    crashed = tmp_path / "crashed"
    with pytest.raises(Crash):
        train(one, crashed, None, settings, log=crash_at_third_slab_commit)
    position = read_manifest(crashed, read_current(crashed)).position
    assert position.epoch == 0 and position.slab > 0
    messages: list[str] = []
    train(one, crashed, None, settings, log=messages.append)
    assert any(f"bucket {position.bucket + 1} of " in m and f"slab {position.slab}" in m for m in messages)
    want, got = arrays(straight), arrays(crashed)
    assert want.keys() == got.keys()
    assert all(np.array_equal(want[k], got[k]) for k in want)


def test_a_stop_signal_takes_effect_inside_a_one_partition_bucket(tmp_path, data, monkeypatch):
    monkeypatch.setattr(bucket_module, "SLAB_EDGES", 64)
    one = import_files(tmp_path / "d1", {"train": tmp_path / "edges.tsv"}, 1)

    import bigembed.training as training_module

    real_seed = training_module.bucket_seed

    def seed_then_signal(*args: int) -> int:  # as if SIGTERM came just as the bucket starts
        os.kill(os.getpid(), signal.SIGTERM)
        return real_seed(*args)

    monkeypatch.setattr(training_module, "bucket_seed", seed_then_signal)
    result = train(one, tmp_path / "run", None, {**BASE, "training.epochs": 2}, log=quiet)
    assert result.stopped
    position = read_manifest(tmp_path / "run", read_current(tmp_path / "run")).position
    assert (position.epoch, position.bucket, position.slab) == (0, 0, 1)  # after the first slab of 7


def test_nan_learning_rate_is_refused_before_anything_is_written(tmp_path, data):
    with pytest.raises(ConfigError, match="training.lr: must be a finite number"):
        train(data, tmp_path / "run", None, {**BASE, "training.lr": "nan"}, log=quiet)
    assert not (tmp_path / "run").exists()


def reimport(tmp_path: Path, data: Path, **kw) -> None:
    """Import the fixture's files again over ``data`` (as `bigembed import --overwrite` does)."""
    from bigembed.partitioner import ImportSpec, Source
    from bigembed.partitioner.engine import import_data

    sources = [Source("train", tmp_path / "edges.tsv"), Source("valid", tmp_path / "valid.tsv")]
    import_data(ImportSpec(sources=sources, num_partitions=2, **kw), data, overwrite=True)


def test_a_data_imported_again_with_another_seed_is_refused_by_train_eval_and_export(tmp_path, data):
    from click.testing import CliRunner

    from bigembed.cli.main import cli
    from bigembed.errors import ConfigConflictError

    run = trained_run(tmp_path, data, epochs=1)
    reimport(tmp_path, data, seed=0)  # the same import again: the same fingerprint
    train(data, run, None, {**BASE, "training.epochs": 2}, log=quiet)
    reimport(tmp_path, data, seed=7)  # same files, same shape, other partition assignment
    with pytest.raises(ConfigConflictError, match="other nodes or partitioning"):
        train(data, run, None, {**BASE, "training.epochs": 3}, log=quiet)
    for args in (["eval", str(run), str(data), "--split", "valid"], ["export", str(run), "-o", str(tmp_path / "x")],
                 ["export", str(run), "-o", str(tmp_path / "x"), "--data", str(data)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, result.output
        assert "other nodes or partitioning" in result.output and str(data) in result.output
    assert not (tmp_path / "x").exists()


def test_a_data_of_the_same_shape_with_other_names_is_refused(tmp_path, data):
    from bigembed.errors import ConfigConflictError

    run = trained_run(tmp_path, data, epochs=1)
    for name in ("edges.tsv", "valid.tsv"):  # rename every node, keep the graph's shape
        path = tmp_path / name
        path.write_text(path.read_text().replace("v", "w"))
    reimport(tmp_path, data)
    with pytest.raises(ConfigConflictError, match="other nodes or partitioning"):
        train(data, run, None, {**BASE, "training.epochs": 2}, log=quiet)


def test_a_version_pinned_by_a_reader_survives_training_beside_it(tmp_path, data):
    from bigembed.evaluation import evaluate_full
    from bigembed.evaluation.report import opened_checkpoint

    run = trained_run(tmp_path, data, epochs=1, **{"checkpoint.keep_versions": 1})
    with opened_checkpoint(run, None) as (manifest, dm, config):
        train(data, run, None, {**BASE, "training.epochs": 4, "checkpoint.keep_versions": 1}, log=quiet)
        assert read_current(run) > manifest.version and manifest.version in list_versions(run)
        assert evaluate_full(run, manifest, dm, config, "valid")["count"] == 20  # every shard still there
    train(data, run, None, {**BASE, "training.epochs": 5, "checkpoint.keep_versions": 1}, log=quiet)
    assert manifest.version not in list_versions(run)  # unpinned: collected by the next commit


def test_commit_interval_stretches_only_when_commits_are_slow():
    from bigembed.training import commit_interval

    assert commit_interval(300, 0.05, 1.0) == 300  # a 1 s commit: 0.3% of the time, no change
    assert commit_interval(300, 0.05, 40.0) == pytest.approx(760)  # 40 s of a 10 GB table: 5%
    assert commit_interval(300, 0.0, 40.0) == 300  # share 0: exactly the interval
    assert commit_interval(0, 0.05, 40.0) == 0  # interval 0: every boundary, whatever it costs


@pytest.mark.parametrize("share, inside", [(0.0, 6), (0.05, 1)])
def test_slow_commits_are_spaced_out_to_their_share_of_the_time(tmp_path, data, monkeypatch, share, inside):
    """P=1, 7 slabs an epoch, a commit due after every slab: commits that take 0.2 s while a slab
    trains in milliseconds are skipped, after the first one has shown how long they take, until
    19 times that has passed (5%); with share 0 every slab commits."""
    import time

    from bigembed.checkpoint.versions import VersionWriter

    monkeypatch.setattr(bucket_module, "SLAB_EDGES", 64)
    one = import_files(tmp_path / "d1", {"train": tmp_path / "edges.tsv"}, 1)
    real_commit = VersionWriter.commit

    def slow_commit(self, *args, **kwargs):
        time.sleep(0.2)
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(VersionWriter, "commit", slow_commit)
    messages: list[str] = []
    train(one, tmp_path / "run", None, {**BASE, "training.epochs": 1, "checkpoint.interval_seconds": 1e-6,
                                         "checkpoint.max_commit_share": share}, log=messages.append)
    slab_commits = [m for m in messages if m.startswith("committed v") and "slab" in m]
    assert len(slab_commits) == inside
    assert all(m.endswith(" s)") for m in slab_commits)


def test_the_epoch_bar_moves_within_a_bucket(tmp_path, data, monkeypatch):
    """At P = 1 an epoch is one bucket: the bar moves slab by slab, and its updates add up to
    the epoch's edges exactly (not one jump when the bucket ends)."""
    import contextlib

    import bigembed.training as training_module

    monkeypatch.setattr(bucket_module, "SLAB_EDGES", 64)
    one = import_files(tmp_path / "d1", {"train": tmp_path / "edges.tsv"}, 1)
    updates: list[int] = []

    class Bar:
        def update(self, n: int) -> None:
            updates.append(n)

        def set_postfix(self, **_: object) -> None:
            pass

    @contextlib.contextmanager
    def recording_bar(total, *_args, **_kwargs):
        yield Bar()

    monkeypatch.setattr(training_module, "progress_bar", recording_bar)
    train(one, tmp_path / "run", None, {**BASE, "training.epochs": 1}, log=quiet)
    edges = sum(1 for _ in (tmp_path / "edges.tsv").open())
    assert sum(updates) == edges
    assert len(updates) == -(-edges // 64) and max(updates) <= 64  # one update per slab
