"""The commit protocol: references not copies, garbage collection, fallback on damage."""

from pathlib import Path

import numpy as np
import pytest

from bigembed.checkpoint import (
    Position,
    VersionWriter,
    collect_garbage,
    load_good_version,
    read_current,
    remove_uncommitted,
)
from bigembed.checkpoint.versions import committed_versions, list_versions, read_manifest, read_shard_of, version_dir
from bigembed.errors import CheckpointError


def commit(run: Path, base, version: int, arrays: dict[str, np.ndarray]):
    writer = VersionWriter(run, base, version)
    for key, arr in arrays.items():
        writer.write(key, arr)
    return writer.commit(Position(version, 0), {})


def damage(run: Path, manifest, key: str) -> None:
    shard = run / manifest.shards[key]["path"]
    chunk = next(p for p in shard.rglob("*") if p.is_file() and p.name != "zarr.json")
    data = bytearray(chunk.read_bytes())
    data[0] ^= 0xFF
    chunk.write_bytes(bytes(data))


def test_unchanged_shards_are_referenced_not_copied(tmp_path):
    a, b = np.ones((3, 2), np.float32), np.zeros((4, 2), np.float32)
    v0 = commit(tmp_path, None, 0, {"emb/n/0": a, "emb/n/1": b})
    v1 = commit(tmp_path, v0, 1, {"emb/n/1": b + 1})
    assert v1.shards["emb/n/0"]["path"].startswith("checkpoints/v0/")
    assert v1.shards["emb/n/1"]["path"].startswith("checkpoints/v1/")
    assert not (version_dir(tmp_path, 1) / "emb_n_0.zarr").exists()
    assert read_current(tmp_path) == 1


def test_garbage_collection_keeps_referenced_folders(tmp_path):
    x = np.ones((2, 2), np.float32)
    m = commit(tmp_path, None, 0, {"a": x, "b": x})
    for v in range(1, 5):
        m = commit(tmp_path, m, v, {"b": x * v})
        collect_garbage(tmp_path, m, keep=2)
    # v0 still holds "a" (never rewritten); v1..v2 are no longer needed.
    assert list_versions(tmp_path) == [0, 3, 4]


def test_a_folder_kept_only_for_its_shards_is_no_longer_a_version(tmp_path):
    """v1's folder stays for the shard v3 references, but v1's manifest also names v0's
    shards, which are gone: v1 must not be offered as a version to fall back to or pin, and
    a resume must not delete its folder."""
    x = np.ones((2, 2), np.float32)
    m = commit(tmp_path, None, 0, {"a": x, "b": x, "c": x})
    m = commit(tmp_path, m, 1, {"a": x * 2})
    for v in range(2, 4):
        m = commit(tmp_path, m, v, {"b": x * v})
        collect_garbage(tmp_path, m, keep=1)
    m = commit(tmp_path, m, 4, {"c": x * 4})
    collect_garbage(tmp_path, m, keep=1)
    assert list_versions(tmp_path) == [1, 3, 4]  # v1 holds "a", v3 holds "b"
    assert committed_versions(tmp_path) == [4]
    remove_uncommitted(tmp_path)
    assert list_versions(tmp_path) == [1, 3, 4]
    assert np.array_equal(read_shard_of(tmp_path, m, "a"), x * 2)


def test_damaged_current_falls_back_to_parent_and_says_so(tmp_path):
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    v0 = commit(tmp_path, None, 0, {"a": x})
    v1 = commit(tmp_path, v0, 1, {"a": x + 1})
    damage(tmp_path, v1, "a")
    warnings = []
    good = load_good_version(tmp_path, warnings.append)
    assert good.version == 0
    assert len(warnings) == 1 and "checkpoints/v1/a.zarr" in warnings[0] and "falling back to v0" in warnings[0]


def test_no_intact_version_is_a_one_line_error_naming_the_shard(tmp_path):
    v0 = commit(tmp_path, None, 0, {"a": np.ones((3, 2), np.float32)})
    damage(tmp_path, v0, "a")
    with pytest.raises(CheckpointError) as info:
        load_good_version(tmp_path, print)
    assert "checkpoints/v0/a.zarr" in str(info.value) and "\n" not in str(info.value)


def test_uncommitted_version_is_removed(tmp_path):
    v0 = commit(tmp_path, None, 0, {"a": np.ones((2, 2), np.float32)})
    writer = VersionWriter(tmp_path, v0, 1)
    writer.write("a", np.zeros((2, 2), np.float32))  # crash before commit
    (tmp_path / ".CURRENT.tmp-999999").write_text("v1")  # killed while replacing CURRENT
    remove_uncommitted(tmp_path)
    assert list_versions(tmp_path) == [0]
    assert read_manifest(tmp_path, 0).version == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CURRENT", "checkpoints"]


def test_staged_shard_is_read_back_before_commit(tmp_path):
    v0 = commit(tmp_path, None, 0, {"a": np.ones((2, 2), np.float32)})
    writer = VersionWriter(tmp_path, v0, 1)
    np.testing.assert_array_equal(writer.read("a"), np.ones((2, 2)))
    writer.write("a", np.full((2, 2), 7, np.float32))
    np.testing.assert_array_equal(writer.read("a"), np.full((2, 2), 7))


def test_only_shards_this_session_trusts_skip_the_checksum(tmp_path):
    """A base shard is verified on read unless the session already knows it good (it
    verified the version at resume, or wrote the shard); a successor trusts what its
    predecessor wrote."""
    v0 = commit(tmp_path, None, 0, {"a": np.ones((2, 2), np.float32), "b": np.ones(3, np.float32)})
    damage(tmp_path, v0, "a")
    with pytest.raises(CheckpointError, match=r"a\.zarr: shard checksum mismatch"):
        VersionWriter(tmp_path, v0, 1).read("a")
    trusting = VersionWriter(tmp_path, v0, 1, {v0.shards["a"]["path"]})
    assert trusting.read("a")[0, 0] != 1.0  # read as stored, not checked again
    trusting.write("b", np.full(3, 5, np.float32))
    v1 = trusting.commit(Position(1, 0), {})
    successor = trusting.successor(v1)
    assert successor.trusted == {v0.shards["a"]["path"], v1.shards["b"]["path"]}
    np.testing.assert_array_equal(successor.read("b"), np.full(3, 5))


def test_a_shard_staged_without_its_hash_is_hashed_once_at_commit_as_last_written(tmp_path):
    """An evicted partition is staged with hash_now=False, maybe several times; the commit
    records the checksum of the last copy, and a resume verifies against it."""
    from bigembed.storage.shards import array_checksum

    v0 = commit(tmp_path, None, 0, {"emb/n/0": np.zeros((5, 2), np.float32)})
    writer = VersionWriter(tmp_path, v0, 1)
    for value in (1.0, 2.0, 3.0):
        writer.write("emb/n/0", np.full((5, 2), value, np.float32), hash_now=False)
        assert writer.written["emb/n/0"]["sha256"] is None
    v1 = writer.commit(Position(1, 0), {})
    assert v1.shards["emb/n/0"]["sha256"] == array_checksum(np.full((5, 2), 3.0, np.float32))
    assert read_manifest(tmp_path, 1).shards["emb/n/0"]["sha256"] == v1.shards["emb/n/0"]["sha256"]
    warnings: list[str] = []
    assert load_good_version(tmp_path, warnings.append).version == 1 and not warnings
    damage(tmp_path, v1, "emb/n/0")
    assert load_good_version(tmp_path, warnings.append).version == 0  # the recorded checksum catches it
    assert warnings and "checksum" in warnings[0]


def test_a_key_staged_twice_is_rewritten_in_place_and_committed_as_last_written(tmp_path):
    """An evicted partition is staged several times before a commit: the later copies go over
    the staged files in place (the committed versions are never touched), and the commit
    records and verifies the last one."""
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    v0 = commit(tmp_path, None, 0, {"a": x})
    writer = VersionWriter(tmp_path, v0, 1)
    writer.write("a", x + 1, hash_now=False)
    staged = writer.shard_path("a")
    files = {p: p.stat().st_ino for p in staged.rglob("*") if p.is_file()}
    writer.write("a", x + 2, hash_now=False)
    assert {p: p.stat().st_ino for p in staged.rglob("*") if p.is_file()} == files
    assert np.array_equal(writer.read("a"), x + 2)
    v1 = writer.commit(Position(1, 0), {})
    assert v1.shards["a"]["path"].startswith("checkpoints/v1/")
    assert np.array_equal(read_shard_of(tmp_path, v1, "a"), x + 2)  # verified against the manifest
    assert np.array_equal(read_shard_of(tmp_path, v0, "a"), x)  # the committed version untouched


def test_a_kill_during_garbage_collection_leaves_no_half_deleted_version(tmp_path, monkeypatch):
    """The folder is renamed away before its files go: a kill between two unlinks leaves a
    hidden folder that the next start removes, never a version missing some of its shards."""
    import bigembed.checkpoint.versions as versions

    x = np.ones((2, 2), np.float32)
    m = commit(tmp_path, None, 0, {"a": x})
    m = commit(tmp_path, m, 1, {"a": x * 2})
    real = versions.shutil.rmtree

    class Killed(BaseException):
        pass

    def killed_midway(path, *args, **kwargs):
        next(p for p in Path(path).rglob("*") if p.is_file() and p.name != "manifest.json").unlink()
        raise Killed

    monkeypatch.setattr(versions.shutil, "rmtree", killed_midway)
    with pytest.raises(Killed):
        collect_garbage(tmp_path, m, keep=1)
    monkeypatch.setattr(versions.shutil, "rmtree", real)
    assert committed_versions(tmp_path) == [1] and list_versions(tmp_path) == [1]
    collect_garbage(tmp_path, m, keep=1)  # the next commit's collection finishes the job
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["v1"]
