"""Edge columns are memory maps; a trainer copies slabs out and then drops the mapped pages.
Their dtypes are the manifest's: the old int64/int64/int32 or the compact layout's."""

import sys

import numpy as np
import pytest
from mmap_ninja import numpy as ninja_np

from bigembed.errors import DataLayoutError
from bigembed.storage.edges import Bucket, EdgeArrays, append_edges, bucket_dir, compact_dtypes, read_edges


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_drop_pages_returns_the_mapped_pages_read_so_far(tmp_path):
    ninja_np.from_ndarray(tmp_path / "lhs", np.arange(8_000_000, dtype=np.int64))  # 61 MiB
    column = ninja_np.open_existing(tmp_path / "lhs", mode="r")
    edges = EdgeArrays(column[1::2], column, column[:5])  # views of the map, as edge chunks make
    before = resident_mib()
    # touch every page of the map without allocating (an allocator that keeps freed memory,
    # as training sets up, would blur the measure)
    assert int(edges.lhs.sum()) == sum(range(1, 8_000_000, 2))
    assert resident_mib() - before > 40
    edges.drop_pages()
    assert resident_mib() - before < 10
    assert int(edges.rhs[123]) == 123  # the map still reads after the drop


# --- the compact layout: column dtypes from the manifest ---------------------------------

@pytest.mark.parametrize(("max_rows", "offsets"), [
    (0, np.int32), (2**31 - 1, np.int32), (2**31, np.int64), (2**40, np.int64)])
def test_compact_offsets_are_int32_while_every_offset_fits(max_rows, offsets):
    dtypes = compact_dtypes(max_rows, 3)
    assert dtypes["lhs"] == dtypes["rhs"] == np.dtype(offsets)
    assert all(isinstance(d, np.dtype) for d in dtypes.values()) and set(dtypes) == {"lhs", "rhs", "rel"}


@pytest.mark.parametrize(("relations", "rel"), [
    (1, np.uint8), (256, np.uint8), (257, np.int16), (32767, np.int16), (32768, np.int32), (10**6, np.int32)])
def test_compact_relation_ids_take_the_smallest_type_that_holds_them(relations, rel):
    dtypes = compact_dtypes(1000, relations)
    assert dtypes["rel"] == np.dtype(rel)
    assert relations - 1 <= np.iinfo(dtypes["rel"]).max  # the largest id fits


def edges_of(lhs, rhs, rel, weight=None) -> EdgeArrays:
    return EdgeArrays(np.asarray(lhs, np.int64), np.asarray(rhs, np.int64), np.asarray(rel, np.int32),
                      None if weight is None else np.asarray(weight, np.float32))


def test_append_edges_writes_the_dtypes_asked_and_reads_them_back(tmp_path):
    dtypes = compact_dtypes(2**31 - 1, 256)
    folder = bucket_dir(tmp_path, "train", Bucket(0, 1))
    edges = edges_of([0, 2**31 - 2, 5], [7, 0, 2**31 - 2], [0, 255, 3], [1.0, 0.5, 2.0])
    append_edges(folder, edges, dtypes)
    append_edges(folder, edges_of([1], [2], [4], [3.0]), dtypes)  # a second chunk extends the columns
    assert (folder / "lhs" / "data.ninja").stat().st_size == 4 * 4
    assert (folder / "rel" / "data.ninja").stat().st_size == 4
    back = read_edges(tmp_path, "train", Bucket(0, 1), 4, weighted=True, dtypes=dtypes)
    assert back.lhs.dtype == np.int32 and back.rhs.dtype == np.int32 and back.rel.dtype == np.uint8
    assert back.lhs.tolist() == [0, 2**31 - 2, 5, 1] and back.rhs.tolist() == [7, 0, 2**31 - 2, 2]
    assert back.rel.tolist() == [0, 255, 3, 4] and back.weight.tolist() == [1.0, 0.5, 2.0, 3.0]


def test_append_edges_without_dtypes_keeps_the_old_layout(tmp_path):
    append_edges(tmp_path / "b", edges_of([1, 2], [3, 4], [0, 1]))
    assert [ninja_np.open_existing(tmp_path / "b" / c).dtype for c in ("lhs", "rhs", "rel")] == [
        np.int64, np.int64, np.int32]


@pytest.mark.parametrize(("column", "value", "dtypes"), [
    ("lhs", 2**31, {"lhs": "int32", "rhs": "int32", "rel": "uint8"}),
    ("rhs", 2**31, {"lhs": "int64", "rhs": "int32", "rel": "uint8"}),
    ("lhs", -(2**31) - 1, {"lhs": "int32", "rhs": "int32", "rel": "uint8"}),
    ("rel", 300, {"lhs": "int32", "rhs": "int32", "rel": "uint8"}),
    ("rel", 256, {"lhs": "int32", "rhs": "int32", "rel": "uint8"}),
    ("rel", -1, {"lhs": "int32", "rhs": "int32", "rel": "uint8"}),
    ("rel", 32768, {"lhs": "int32", "rhs": "int32", "rel": "int16"}),
])
def test_append_edges_refuses_a_value_its_dtype_cannot_hold(tmp_path, column, value, dtypes):
    values = {"lhs": [0, 1, 2], "rhs": [0, 1, 2], "rel": [0, 1, 2]}
    values[column][1] = value
    with pytest.raises(ValueError, match=f"edge column '{column}': value {value} does not fit {dtypes[column]}"):
        append_edges(tmp_path / "b", edges_of(**values), {k: np.dtype(v) for k, v in dtypes.items()})
    assert not (tmp_path / "b").exists()  # nothing written, not even the columns before it


def test_append_edges_refuses_to_mix_dtypes_in_one_column(tmp_path):
    append_edges(tmp_path / "b", edges_of([1], [2], [0]), compact_dtypes(10, 2))
    with pytest.raises(ValueError, match="the column holds int32, cannot append int64"):
        append_edges(tmp_path / "b", edges_of([2**40], [2], [0]), None)
    assert ninja_np.open_existing(tmp_path / "b" / "lhs").shape == (1,)


@pytest.mark.parametrize(("written", "expected"), [
    (None, compact_dtypes(10, 3)),  # old files, a manifest that says compact
    (compact_dtypes(10, 3), None),  # compact files, a manifest that says old
    ({"lhs": np.dtype("int32"), "rhs": np.dtype("int32"), "rel": np.dtype("int16")}, compact_dtypes(10, 3)),
])
def test_read_edges_refuses_a_column_whose_dtype_is_not_the_manifests(tmp_path, written, expected):
    append_edges(bucket_dir(tmp_path, "train", Bucket(1, 0)), edges_of([1, 2], [3, 4], [0, 2]), written)
    want = expected or {"lhs": np.dtype("int64"), "rhs": np.dtype("int64"), "rel": np.dtype("int32")}
    have = written or {"lhs": np.dtype("int64"), "rhs": np.dtype("int64"), "rel": np.dtype("int32")}
    first = next(c for c in ("lhs", "rhs", "rel") if want[c] != have[c])
    with pytest.raises(DataLayoutError) as info:
        read_edges(tmp_path, "train", Bucket(1, 0), 2, dtypes=expected)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "edges" / "train" / "1_0" / first) + ":")
    assert f"expected 2 {want[first].name} values" in message and have[first].name in message
    assert read_edges(tmp_path, "train", Bucket(1, 0), 2, dtypes=written).rel.tolist() == [0, 2]


def test_an_empty_bucket_reads_as_empty_columns_of_the_manifests_dtypes(tmp_path):
    dtypes = compact_dtypes(10, 3)
    edges = read_edges(tmp_path, "train", Bucket(0, 0), 0, dtypes=dtypes)
    assert len(edges) == 0 and (edges.lhs.dtype, edges.rhs.dtype, edges.rel.dtype) == (
        np.int32, np.int32, np.uint8)
