"""The ShardStore contract, run against every implementation (today: shards as zarr arrays in
the RUN's folder). A new backend (shared storage for several machines, an object store) is
added to ``STORES`` and must pass all of it; the checkpoint code reaches shards only through
this interface (the last test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bigembed.checkpoint.versions import Position, VersionWriter, read_shard_of
from bigembed.errors import CheckpointError
from bigembed.storage.shards import LOCAL_SHARDS, ShardStore, array_checksum

STORES = {"local": LOCAL_SHARDS}


@pytest.fixture(params=sorted(STORES))
def store(request) -> ShardStore:
    return STORES[request.param]


def _array(rows: int = 2500, dim: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)


def test_what_is_written_reads_back_with_its_checksum(store, tmp_path):
    a = _array()
    path = tmp_path / f"s{store.suffix}"
    digest = store.write(path, a)
    assert digest == array_checksum(a)
    assert np.array_equal(store.read(path, digest, a.shape), a)
    assert store.checksum(path, a.shape) == digest


def test_a_deferred_write_is_hashed_and_synced_later(store, tmp_path):
    a = _array(rows=3)
    path = tmp_path / f"s{store.suffix}"
    assert store.write(path, a, durable=False, checksum=False) is None
    store.sync(path)
    assert store.checksum(path, a.shape) == array_checksum(a)


def test_a_wrong_checksum_or_shape_is_a_checkpoint_error_naming_the_path(store, tmp_path):
    a = _array()
    path = tmp_path / f"s{store.suffix}"
    store.write(path, a)
    with pytest.raises(CheckpointError, match=str(path)):
        store.read(path, "0" * 64, a.shape)
    with pytest.raises(CheckpointError, match=str(path)):
        store.read(path, None, (a.shape[0] + 1, a.shape[1]))
    with pytest.raises(CheckpointError, match="missing or damaged"):
        store.read(tmp_path / f"absent{store.suffix}", None, a.shape)


def test_overwrite_replaces_a_matching_shard_and_declines_another(store, tmp_path):
    a, b = _array(seed=1), _array(seed=2)
    path = tmp_path / f"s{store.suffix}"
    store.write(path, a)
    done, digest = store.overwrite(path, b)
    assert done and digest == array_checksum(b)
    assert np.array_equal(store.read(path, digest, b.shape), b)
    assert store.overwrite(path, _array(rows=7)) == (False, None)  # another shape: write it instead
    assert store.overwrite(tmp_path / f"none{store.suffix}", b) == (False, None)


def test_a_rewrite_is_atomic_the_old_shard_stays_until_the_new_one_is_whole(store, tmp_path, monkeypatch):
    a = _array(seed=3)
    path = tmp_path / f"s{store.suffix}"
    digest = store.write(path, a)
    import bigembed.storage.shards as shards

    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shards, "_write_raw", full)
    with pytest.raises(CheckpointError, match="No space left on device"):
        store.write(path, _array(seed=4))
    assert np.array_equal(store.read(path, digest, a.shape), a)


class _Recording:
    """A store that records which of its methods the checkpoint code calls."""

    def __init__(self, inner: ShardStore) -> None:
        self.inner, self.calls = inner, []
        self.suffix = inner.suffix

    def __getattr__(self, name):
        method = getattr(self.inner, name)

        def call(*args, **kwargs):
            self.calls.append(name)
            return method(*args, **kwargs)

        return call


def test_the_checkpoint_code_reaches_shards_only_through_the_store(store, tmp_path: Path):
    recording = _Recording(store)
    run = tmp_path / "run"
    writer = VersionWriter(run, None, 0, store=recording)
    writer.write("emb/node/0", _array(rows=5), hash_now=False)
    writer.write("emb/node/0", _array(rows=5, seed=1), hash_now=False)  # staged again: in place
    manifest = writer.commit(Position(0, 0), {})
    nxt = writer.successor(manifest)
    assert np.array_equal(nxt.read("emb/node/0"), _array(rows=5, seed=1))
    assert np.array_equal(read_shard_of(run, manifest, "emb/node/0", store=recording), _array(rows=5, seed=1))
    assert recording.calls == ["write", "overwrite", "checksum", "sync", "read", "read"]
    assert all(e["path"].endswith(store.suffix) for e in manifest.shards.values())
