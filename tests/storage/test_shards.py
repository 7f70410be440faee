"""Shard files: the direct chunk reader agrees with zarr, fills left-out chunks, and
refuses a damaged shard."""

import threading

import numpy as np
import pytest
import zarr

from bigembed.errors import CheckpointError
from bigembed.storage.shards import CHUNK_BYTES, array_checksum, read_shard, shard_checksum, write_shard


def test_read_equals_what_was_written_and_zarr_reads_it_too(tmp_path):
    rows = CHUNK_BYTES // (4 * 8) + 100  # two chunks, the second short
    table = np.random.default_rng(0).random((rows, 8), dtype=np.float32)
    table[: CHUNK_BYTES // 32] = 0.0
    checksum = write_shard(tmp_path / "t.zarr", table)
    assert np.array_equal(read_shard(tmp_path / "t.zarr", checksum, table.shape), table)
    assert np.array_equal(zarr.open_array(str(tmp_path / "t.zarr"), mode="r")[:], table)


def test_a_chunk_zarr_left_out_reads_as_its_fill_value(tmp_path):
    table = np.random.default_rng(1).random((CHUNK_BYTES // 32 * 2, 8), dtype=np.float32)
    table[: CHUNK_BYTES // 32] = 0.0
    z = zarr.create_array(store=str(tmp_path / "z.zarr"), shape=table.shape, chunks=(CHUNK_BYTES // 32, 8),
                          dtype="float32", compressors=None)
    z[:] = table  # zarr does not store the all-zero first chunk
    assert not (tmp_path / "z.zarr" / "c" / "0" / "0").exists()
    assert np.array_equal(read_shard(tmp_path / "z.zarr", None, table.shape), table)
    vector = np.zeros(5000, np.float32)
    checksum = write_shard(tmp_path / "v.zarr", vector)
    assert np.array_equal(read_shard(tmp_path / "v.zarr", checksum, vector.shape), vector)


def test_a_compressed_shard_from_another_tool_is_read_through_zarr(tmp_path):
    table = np.arange(3000, dtype=np.float32).reshape(1000, 3)
    z = zarr.create_array(store=str(tmp_path / "c.zarr"), shape=table.shape, chunks=(300, 3), dtype="float32")
    z[:] = table  # zarr's default compressor
    assert np.array_equal(read_shard(tmp_path / "c.zarr", None, table.shape), table)


def test_a_missing_chunk_of_a_shard_bigembed_wrote_is_damage_not_fill(tmp_path):
    table = np.ones((CHUNK_BYTES // 32 * 2, 8), np.float32)
    write_shard(tmp_path / "m.zarr", table)
    (tmp_path / "m.zarr" / "c" / "1" / "0").unlink()  # a deleted version, or damage
    with pytest.raises(CheckpointError, match=r"m\.zarr: shard is missing or damaged"):
        read_shard(tmp_path / "m.zarr", None, table.shape)


def test_a_truncated_chunk_is_reported_with_the_shard_path(tmp_path):
    table = np.ones((1000, 4), np.float32)
    checksum = write_shard(tmp_path / "t.zarr", table)
    chunk = tmp_path / "t.zarr" / "c" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"t\.zarr: shard is missing or damaged .*chunk 0 is short"):
        read_shard(tmp_path / "t.zarr", checksum, table.shape)


def test_a_deferred_checksum_from_the_files_equals_the_one_taken_at_write(tmp_path):
    """Hashing a shard from its chunk files (the last one padded on disk) gives the checksum
    of the array; for a shard in another layout too; a short chunk is a one-line error."""
    rows = CHUNK_BYTES // (4 * 8) + 100  # two chunks, the second short and padded
    table = np.random.default_rng(2).random((rows, 8), dtype=np.float32)
    assert write_shard(tmp_path / "t.zarr", table, checksum=False) is None
    assert shard_checksum(tmp_path / "t.zarr", table.shape) == array_checksum(table)
    other = np.arange(3000, dtype=np.float32).reshape(1000, 3)
    z = zarr.create_array(store=str(tmp_path / "c.zarr"), shape=other.shape, chunks=(300, 3), dtype="float32")
    z[:] = other
    assert shard_checksum(tmp_path / "c.zarr", other.shape) == array_checksum(other)
    with pytest.raises(CheckpointError, match=r"t\.zarr: shard has shape"):
        shard_checksum(tmp_path / "t.zarr", (rows, 9))
    chunk = tmp_path / "t.zarr" / "c" / "1" / "0"
    chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"t\.zarr: shard is missing or damaged .*chunk 1 is short"):
        shard_checksum(tmp_path / "t.zarr", table.shape)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_tables_round_trip_bit_for_bit_and_widen_exactly(tmp_path, dtype):
    import torch

    from bigembed.storage.dtypes import dtype_name, from_numpy, to_float32, to_numpy

    table = torch.randn(CHUNK_BYTES // (2 * 8) + 7, 8, generator=torch.Generator().manual_seed(2)) \
        .to(getattr(torch, dtype))
    array = to_numpy(table)
    checksum = write_shard(tmp_path / "h.zarr", array)
    back = read_shard(tmp_path / "h.zarr", checksum, tuple(table.shape))
    assert dtype_name(back) == dtype and back.nbytes == table.numel() * 2
    assert torch.equal(from_numpy(back), table)
    assert np.array_equal(to_float32(back), table.float().numpy())
    z = zarr.open_array(str(tmp_path / "h.zarr"), mode="r")  # self-describing for other readers
    attrs = {k: v for k, v in z.attrs.items() if k != "bigembed_all_chunks"}
    assert (z.dtype, attrs) == ((np.dtype(np.uint16), {"bigembed_dtype": "bfloat16"}) if dtype == "bfloat16"
                                else (np.dtype(np.float16), {}))
    assert shard_checksum(tmp_path / "h.zarr", tuple(table.shape)) == checksum


def test_overwrite_in_place_rewrites_the_same_files_only_for_a_matching_shard(tmp_path):
    from bigembed.storage.shards import overwrite_shard

    rows = CHUNK_BYTES // (4 * 8) + 100  # two chunk files, the second short
    rng = np.random.default_rng(2)
    first, second = rng.random((rows, 8), dtype=np.float32), rng.random((rows, 8), dtype=np.float32)
    write_shard(tmp_path / "t.zarr", first)
    files = sorted(p for p in (tmp_path / "t.zarr").rglob("*") if p.is_file() and p.name != "zarr.json")
    inodes = [p.stat().st_ino for p in files]
    done, checksum = overwrite_shard(tmp_path / "t.zarr", second)
    assert done and checksum == array_checksum(second)
    assert [p.stat().st_ino for p in files] == inodes  # the same files, rewritten
    assert np.array_equal(read_shard(tmp_path / "t.zarr", checksum, second.shape), second)
    assert shard_checksum(tmp_path / "t.zarr", second.shape) == checksum
    # another shape, another dtype, or no shard at all: nothing is written
    assert overwrite_shard(tmp_path / "t.zarr", second[:-1]) == (False, None)
    assert overwrite_shard(tmp_path / "t.zarr", second.astype(np.float16)) == (False, None)
    assert overwrite_shard(tmp_path / "none.zarr", second) == (False, None)
    assert np.array_equal(read_shard(tmp_path / "t.zarr", checksum, second.shape), second)


def test_overwrite_that_cannot_write_a_chunk_file_names_the_shard(tmp_path):
    from bigembed.storage.shards import overwrite_shard

    table = np.ones((10, 4), np.float32)
    write_shard(tmp_path / "t.zarr", table)
    chunk = next(p for p in (tmp_path / "t.zarr").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.unlink()
    chunk.mkdir()  # a directory where the chunk file was: opening it for writing fails
    with pytest.raises(CheckpointError, match=r"t\.zarr: cannot write shard"):
        overwrite_shard(tmp_path / "t.zarr", table * 2)


def test_a_read_goes_into_the_array_given_when_it_fits(tmp_path):
    table = np.random.default_rng(3).random((CHUNK_BYTES // 32 + 7, 8), dtype=np.float32)
    checksum = write_shard(tmp_path / "t.zarr", table)
    spare = np.full(table.shape, 5.0, np.float32)
    got = read_shard(tmp_path / "t.zarr", checksum, table.shape, out=spare)
    assert got is spare and np.array_equal(spare, table)
    for wrong in (np.zeros((table.shape[0] - 1, 8), np.float32), np.zeros(table.shape, np.float64),
                  np.zeros((8, table.shape[0]), np.float32).T):  # short, another dtype, not contiguous
        got = read_shard(tmp_path / "t.zarr", checksum, table.shape, out=wrong)
        assert got is not wrong and np.array_equal(got, table) and not wrong.any()


def test_a_large_shard_is_hashed_beside_its_write_with_the_same_checksum(tmp_path, monkeypatch):
    """Above CHUNK_BYTES the hash runs on a thread while the chunks are written: the checksum
    returned is the array's all the same (fresh write and in-place rewrite), and a failing hash
    is not swallowed."""
    from bigembed.storage import shards

    rows = CHUNK_BYTES // (4 * 16) + 3  # just over one chunk's bytes
    array = np.random.default_rng(0).standard_normal((rows, 16), dtype=np.float32)
    threads = []
    real = shards.array_checksum
    monkeypatch.setattr(shards, "array_checksum", lambda a: threads.append(threading.current_thread()) or real(a))
    assert write_shard(tmp_path / "s.zarr", array) == real(array)
    array *= 2
    assert shards.overwrite_shard(tmp_path / "s.zarr", array) == (True, real(array))
    assert len(threads) == 2 and all(t is not threading.main_thread() for t in threads)
    assert write_shard(tmp_path / "small.zarr", array[:3]) == real(array[:3])  # small: hashed inline
    assert threads[-1] is threading.main_thread()

    def broken(_a):
        raise MemoryError("no memory for the hash")

    monkeypatch.setattr(shards, "array_checksum", broken)
    with pytest.raises(MemoryError, match="no memory for the hash"):
        write_shard(tmp_path / "t.zarr", array)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_all_finite_finds_one_bad_value_in_any_storage_dtype(dtype, bad):
    import torch

    from bigembed.storage.dtypes import all_finite, to_numpy

    table = torch.randn(301, 8, generator=torch.Generator().manual_seed(3)).to(getattr(torch, dtype))
    assert all_finite(to_numpy(table))
    table[137, 5] = bad
    assert not all_finite(to_numpy(table))


@pytest.mark.parametrize("shape, dtype", [((3000, 7), np.float32), ((5000,), np.float32), ((300, 4), np.float16),
                                          ((300, 4), np.uint16), ((0, 8), np.float32), ((1, 1), np.int64)])
def test_the_zarr_json_bigembed_writes_is_the_one_zarr_writes_and_zarr_reads_the_shard(tmp_path, shape, dtype):
    """Shards are written without zarr: their metadata must be what zarr itself writes for the
    same array (so any zarr reader opens them), and zarr must read back the same values."""
    import json

    from bigembed.storage.shards import RawLayout

    array = (np.arange(int(np.prod(shape))) % 251 + 1).astype(dtype).reshape(shape)  # no chunk all fill value
    write_shard(tmp_path / "ours", array)
    ours = RawLayout.of(tmp_path / "ours")
    z = zarr.create_array(store=str(tmp_path / "theirs"), shape=shape, chunks=(ours.step, *shape[1:]),
                          dtype=array.dtype, compressors=None,
                          attributes={"bigembed_all_chunks": True,
                                      **({"bigembed_dtype": "bfloat16"} if dtype == np.uint16 else {})})
    mine = json.loads((tmp_path / "ours" / "zarr.json").read_text())
    theirs = json.loads((tmp_path / "theirs" / "zarr.json").read_text())
    assert mine == theirs
    assert RawLayout.of(tmp_path / "theirs") == ours  # and zarr's own is read the fast way
    assert np.array_equal(zarr.open_array(str(tmp_path / "ours"), mode="r")[...], array)
    if shape[0]:
        z[...] = array  # zarr's chunk files, byte for byte as ours
        assert np.array_equal(read_shard(tmp_path / "theirs", array_checksum(array), shape), array)


def test_training_and_evaluation_do_not_import_zarr():
    """Its import cost every command 0.5 s: only a shard in a foreign layout needs it."""
    import subprocess
    import sys

    code = ("import sys, bigembed.training, bigembed.evaluation.ranking, bigembed.export.writers, "
            "bigembed.cli.main; print('zarr' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
