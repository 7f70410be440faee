"""The partitioner: every edge lands in exactly one bucket, balanced partitions, clear errors."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bigembed.errors import BigembedError, InputFormatError
from bigembed.partitioner import ImportSpec, Source, plan_import, write_plan
from bigembed.partitioner.reader import ColumnSpec
from bigembed.storage.data_manifest import read_data_manifest
from bigembed.storage.edges import Bucket, read_edges
from bigembed.storage.names import iter_names, names_dir
from tests.conftest import import_files, write_tiny_graph


def read_back(data_dir: Path, split: str = "train") -> list[tuple[str, str, str]]:
    """Reconstruct (lhs name, rel name, rhs name) triples from a DATA directory."""
    dm = read_data_manifest(data_dir)
    names = []
    for p in range(dm.num_partitions):
        if dm.id_kind == "int":
            names.append([str(o * dm.num_partitions + p) for o in range(dm.entity_counts[p])])
        else:
            names.append([n for chunk in iter_names(names_dir(data_dir, dm.type_names[0], p), dm.entity_counts[p])
                          for n in chunk])
    out = []
    for l in range(dm.num_partitions):
        for r in range(dm.num_partitions):
            e = read_edges(data_dir, split, Bucket(l, r), dm.edge_count(split, Bucket(l, r)), dtypes=dm.edge_dtypes)
            out += [(names[l][a], dm.relations[c], names[r][b]) for a, b, c in zip(e.lhs, e.rhs, e.rel)]
    return out


@pytest.mark.parametrize("partitions", [1, 4, 5])
def test_every_edge_lands_once_and_partitions_are_balanced(tmp_path, tiny_graph, partitions):
    path, triples = tiny_graph
    data = import_files(tmp_path / "data", {"train": path}, partitions, chunk_size=50)
    assert Counter(read_back(data)) == Counter(triples)
    dm = read_data_manifest(data)
    assert max(dm.entity_counts) - min(dm.entity_counts) <= 1
    assert dm.num_entities == len({t[0] for t in triples} | {t[2] for t in triples})
    assert dm.num_edges("train") == len(triples)


def test_chunk_size_does_not_change_the_result(tmp_path, tiny_graph):
    path, _ = tiny_graph
    a = import_files(tmp_path / "a", {"train": path}, 3, chunk_size=7)
    b = import_files(tmp_path / "b", {"train": path}, 3, chunk_size=100_000)
    assert read_back(a) == read_back(b)


def test_seed_changes_assignment_but_not_content(tmp_path, tiny_graph):
    path, triples = tiny_graph
    a = import_files(tmp_path / "a", {"train": path}, 4, seed=1)
    b = import_files(tmp_path / "b", {"train": path}, 4, seed=2)
    assert read_data_manifest(a).bucket_counts != read_data_manifest(b).bucket_counts
    assert Counter(read_back(a)) == Counter(read_back(b)) == Counter(triples)


def test_splits_share_one_dictionary(tmp_path):
    train, test = tmp_path / "train.tsv", tmp_path / "test.tsv"
    train_triples = write_tiny_graph(train, seed=1)
    test_triples = write_tiny_graph(test, seed=2, edges=31, nodes=45)  # some nodes only in test
    data = import_files(tmp_path / "data", {"train": train, "test": test}, 3)
    assert Counter(read_back(data, "test")) == Counter(test_triples)
    assert Counter(read_back(data, "train")) == Counter(train_triples)


def test_gzip_csv_two_columns(tmp_path):
    path = tmp_path / "e.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("# comment\na,b\nb,c\n\nc,a\n")
    data = import_files(tmp_path / "data", {"train": path}, 2, delimiter=",", columns=ColumnSpec.parse("lhs,rhs"))
    assert sorted(read_back(data)) == [("a", "edge", "b"), ("b", "edge", "c"), ("c", "edge", "a")]


def test_float_weights_are_kept_exactly_not_truncated(tmp_path):
    path = tmp_path / "e.tsv"
    path.write_text("a\tr\tb\t0.25\nb\tr\tc\t2.75\nc\tr\ta\t1\n")
    data = import_files(tmp_path / "data", {"train": path}, 1, columns=ColumnSpec.parse("lhs,rel,rhs,weight"))
    dm = read_data_manifest(data)
    assert dm.weighted
    edges = read_edges(data, "train", Bucket(0, 0), 3, weighted=True, dtypes=dm.edge_dtypes)
    assert sorted(np.asarray(edges.weight).tolist()) == [0.25, 1.0, 2.75]
    assert edges.weight.dtype == np.float32


def test_int_ids_skip_the_dictionary(tmp_path):
    path = tmp_path / "e.tsv"
    path.write_text("0\tx\t5\n5\ty\t9\n3\tx\t0\n")
    data = import_files(tmp_path / "data", {"train": path}, 3, ids="int")
    dm = read_data_manifest(data)
    assert dm.id_kind == "int" and dm.num_entities == 10
    assert sorted(read_back(data)) == sorted([("0", "x", "5"), ("5", "y", "9"), ("3", "x", "0")])


def test_plan_is_a_value_before_anything_is_written(tmp_path, tiny_graph):
    path, _ = tiny_graph
    plan = plan_import(ImportSpec(sources=[Source("train", path)], num_partitions=4))
    assert "37 nodes" in plan.summary() or "nodes (string ids) in 4 partitions" in plan.summary()
    assert sum(plan.entity_counts) == plan.num_entities
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize(
    "content, columns, ids, message",
    [
        ("a\tr\tb\nc\td\n", "lhs,rel,rhs", "string", "e.tsv:2: expected at least 3 fields"),
        ("", "lhs,rel,rhs", "string", "e.tsv: no edges"),
        ("# only a comment\n", "lhs,rel,rhs", "string", "e.tsv: no edges"),
        ("1\tr\t2\nx\tr\t3\n", "lhs,rel,rhs", "int", "e.tsv:2: node id 'x' is not an integer"),
        ("1\tr\t-2\n", "lhs,rel,rhs", "int", "e.tsv:1: negative node id '-2'"),
        ("a\tr\t\n", "lhs,rel,rhs", "string", "e.tsv:1: empty node id"),
        ("a\tr\tb\t1\nb\tr\tc\theavy\n", "lhs,rel,rhs,weight", "string",
         "e.tsv:2: edge weight must be a finite number >= 0, got 'heavy'"),
        ("a\tr\tb\t-0.5\n", "lhs,rel,rhs,weight", "string", "e.tsv:1: edge weight must be a finite number >= 0"),
        ("a\tr\tb\tnan\n", "lhs,rel,rhs,weight", "string", "e.tsv:1: edge weight must be a finite number >= 0"),
    ],
)
def test_bad_input_names_file_and_line_and_writes_nothing(tmp_path, content, columns, ids, message):
    path = tmp_path / "e.tsv"
    path.write_text(content)
    out = tmp_path / "data"
    with pytest.raises(InputFormatError) as info:
        import_files(out, {"train": path}, 2, columns=ColumnSpec.parse(columns), ids=ids)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["e.tsv"]


def test_malformed_line_in_pass_two_leaves_no_partial_output(tmp_path, tiny_graph):
    path, _ = tiny_graph
    spec = ImportSpec(sources=[Source("train", path)], num_partitions=2, chunk_size=10)
    plan = plan_import(spec)
    path.write_text(path.read_text() + "broken line\n")  # the file changed between the passes
    with pytest.raises(InputFormatError, match=r"tiny.tsv:212: expected at least 3 fields"):
        write_plan(plan, tmp_path / "data")
    assert not (tmp_path / "data").exists()
    assert not any(p.name.startswith(".data") for p in tmp_path.iterdir())


def test_existing_output_is_refused_unless_overwrite(tmp_path, tiny_graph):
    path, _ = tiny_graph
    out = import_files(tmp_path / "data", {"train": path}, 2)
    with pytest.raises(BigembedError, match="already exists"):
        import_files(out, {"train": path}, 2)
    spec = ImportSpec(sources=[Source("train", path)], num_partitions=3)
    write_plan(plan_import(spec), out, overwrite=True)
    assert read_data_manifest(out).num_partitions == 3


@pytest.mark.parametrize("text, message", [("lhs,foo,rhs", "unknown column 'foo'"), ("lhs,rel", "must name both"),
                                           ("lhs,lhs,rhs", "given twice")])
def test_bad_column_specs(text, message):
    with pytest.raises(InputFormatError, match=message):
        ColumnSpec.parse(text)


def test_edge_arrays_have_documented_dtypes(tmp_path, tiny_graph):
    path, _ = tiny_graph
    data = import_files(tmp_path / "data", {"train": path}, 1)
    dm = read_data_manifest(data)
    e = read_edges(data, "train", Bucket(0, 0), dm.edge_count("train", Bucket(0, 0)), dtypes=dm.edge_dtypes)
    # the compact layout: int32 offsets (a partition of fewer than 2**31 rows), uint8 relations (<= 256)
    assert (e.lhs.dtype, e.rhs.dtype, e.rel.dtype) == (np.int32, np.int32, np.uint8)
    assert dm.raw["format_version"] == 3


def test_line_numbers_stay_exact_across_comments_and_chunks(tmp_path):
    path = tmp_path / "e.tsv"
    path.write_text("# header\na\tr\tb\n\nc\tr\td\n# more\ne\tr\tf\ng\tr\n")
    with pytest.raises(InputFormatError, match=r"e.tsv:7: expected at least 3 fields"):
        import_files(tmp_path / "data", {"train": path}, 1, chunk_size=3)


@pytest.mark.parametrize("compress", [False, True])
def test_pass_one_progress_counts_stored_bytes(tmp_path, compress):
    path = tmp_path / ("e.tsv.gz" if compress else "e.tsv")
    text = "".join(f"n{i}\tr\tn{i + 1}\n" for i in range(5000))
    if compress:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    seen: list[int] = []
    plan_import(ImportSpec(sources=[Source("train", path)], chunk_size=700), seen.append)
    assert len(seen) == 8 and all(n >= 0 for n in seen)
    assert sum(seen) == path.stat().st_size


def test_full_disk_during_import_keeps_nothing(tmp_path, tiny_graph, monkeypatch):
    import errno

    import bigembed.partitioner.engine as writer

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer, "append_edges", full)
    path, _ = tiny_graph
    with pytest.raises(BigembedError, match=r"data: import failed while writing \(No space left on device\)"):
        import_files(tmp_path / "data", {"train": path}, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.tsv"]


@pytest.mark.parametrize("ids", ["int", "string"])
def test_a_failed_background_writeback_is_a_one_line_error_and_keeps_nothing(tmp_path, monkeypatch, ids):
    """Bucket files are synced on a background thread while the import goes on; a write error
    there (a full disk found at writeback) must still stop the import with one line."""
    import errno

    import bigembed.partitioner.engine as engine

    def failing(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(engine.os, "fdatasync", failing)
    path = tmp_path / "e.tsv"
    path.write_text("".join(f"{i}\tr\t{(i * 7) % 50}\n" for i in range(200)))
    message = r"data: import failed while writing \(No space left on device\); nothing was kept$"
    with pytest.raises(BigembedError, match=message):
        import_files(tmp_path / "data", {"train": path}, 2, ids=ids)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.tsv"]
