"""The one-pass import engine: the same graph as the two-pass importer, from files, pipes and
Parquet; names that hash alike stay apart; the dictionary spills under a small budget."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import bigembed.partitioner.blocks as blocks
import bigembed.partitioner.engine as engine
from bigembed.cli.main import cli as main
from bigembed.errors import BigembedError, InputFormatError
from bigembed.partitioner import ImportSpec, Source, plan_import, write_plan
from bigembed.partitioner.engine import import_data
from bigembed.partitioner.reader import ColumnSpec
from bigembed.storage.data_manifest import read_data_manifest
from bigembed.storage.edges import Bucket, read_edges
from bigembed.storage.names import iter_names, names_dir
from tests.conftest import write_tiny_graph


def buckets(data: Path, split: str = "train") -> tuple[dict[tuple[int, int], Counter], dict[str, int]]:
    """Each bucket's edges as a multiset of (lhs name, relation, rhs name); and node -> partition."""
    dm = read_data_manifest(data)
    names, where = [], {}
    for p in range(dm.num_partitions):
        if dm.id_kind == "int":
            part = [str(o * dm.num_partitions + p) for o in range(dm.entity_counts[p])]
        else:
            part = [n for chunk in iter_names(names_dir(data, dm.type_names[0], p), dm.entity_counts[p]) for n in chunk]
        names.append(part)
        where.update(dict.fromkeys(part, p))
    out = {}
    for l in range(dm.num_partitions):
        for r in range(dm.num_partitions):
            e = read_edges(data, split, Bucket(l, r), dm.edge_count(split, Bucket(l, r)), dtypes=dm.edge_dtypes)
            out[(l, r)] = Counter((names[l][a], dm.relations[c], names[r][b])
                                  for a, b, c in zip(e.lhs.tolist(), e.rhs.tolist(), e.rel.tolist()))
    return out, where


def old_import(out: Path, files: dict[str, Path], partitions: int, **kw) -> Path:
    write_plan(plan_import(ImportSpec(sources=[Source(s, p) for s, p in files.items()], num_partitions=partitions,
                                      **kw)), out)
    return out


def new_import(out: Path, files: dict[str, Path], partitions: int, **kw) -> Path:
    import_data(ImportSpec(sources=[Source(s, p) for s, p in files.items()], num_partitions=partitions, **kw), out)
    return out


@pytest.mark.parametrize("partitions", [1, 3])
def test_the_same_graph_as_the_two_pass_importer(tmp_path, partitions):
    train, test = tmp_path / "train.tsv", tmp_path / "test.tsv"
    write_tiny_graph(train, seed=1, edges=400, nodes=90)
    write_tiny_graph(test, seed=2, edges=40, nodes=120)  # some nodes only in test
    files = {"train": train, "test": test}
    old, new = old_import(tmp_path / "old", files, partitions), new_import(tmp_path / "new", files, partitions)
    a, b = read_data_manifest(old), read_data_manifest(new)
    assert a.num_entities == b.num_entities and a.relations == b.relations
    assert sorted(a.entity_counts) == sorted(b.entity_counts)  # balanced the same way
    for split in ("train", "test"):
        (new_buckets, where), (old_buckets, _) = buckets(new, split), buckets(old, split)
        assert sum(new_buckets.values(), Counter()) == sum(old_buckets.values(), Counter())
        for (l, r), edges in new_buckets.items():  # each edge in the bucket of its nodes' partitions
            assert all(where[x] == l and where[y] == r for x, _, y in edges)


def test_int_ids_give_the_very_same_buckets(tmp_path):
    path = tmp_path / "e.tsv"
    rng = np.random.default_rng(0)
    path.write_text("".join(f"{a}\tr{c}\t{b}\n" for a, b, c in rng.integers(0, 50, (300, 3)).tolist()))
    old = old_import(tmp_path / "old", {"train": path}, 4, ids="int")
    new = new_import(tmp_path / "new", {"train": path}, 4, ids="int")
    assert buckets(old)[0] == buckets(new)[0]
    assert read_data_manifest(old).entity_counts == read_data_manifest(new).entity_counts
    # and in the same order within each bucket: input order
    a, b = read_data_manifest(old), read_data_manifest(new)
    e1 = read_edges(old, "train", Bucket(1, 2), a.edge_count("train", Bucket(1, 2)))
    e2 = read_edges(new, "train", Bucket(1, 2), b.edge_count("train", Bucket(1, 2)), dtypes=b.edge_dtypes)
    assert e1.lhs.tolist() == e2.lhs.tolist() and e1.rhs.tolist() == e2.rhs.tolist()


@pytest.mark.parametrize("ids", ["int", "string"])
def test_blank_lines_and_padded_relations_read_as_the_clean_file(tmp_path, ids):
    """Arrow reads a blank line as a row of empty fields and keeps spaces in a dictionary
    column; neither may reach the buckets (a blank int line once became an edge of null ids)."""
    rng = np.random.default_rng(3)
    rows = [(a, c, b) for a, b, c in rng.integers(0, 40, (200, 3)).tolist()]
    clean, messy = tmp_path / "clean.tsv", tmp_path / "messy.tsv"
    clean.write_text("".join(f"{a}\tr{c}\t{b}\n" for a, c, b in rows))
    messy.write_text("".join(f"{a}\t r{c} \t{b}\n" + ("\n" if i % 50 == 7 else "") for i, (a, c, b) in enumerate(rows)))
    a = new_import(tmp_path / "a", {"train": clean}, 2, ids=ids)
    b = new_import(tmp_path / "b", {"train": messy}, 2, ids=ids)
    assert buckets(a)[0] == buckets(b)[0]
    assert read_data_manifest(a).relations == read_data_manifest(b).relations


def test_an_empty_int_id_names_its_line(tmp_path):
    path = tmp_path / "e.tsv"
    path.write_text("1\tr\t2\n3\tr\t\n")
    with pytest.raises(InputFormatError, match=r"e.tsv:2: empty node id"):
        new_import(tmp_path / "d", {"train": path}, 1, ids="int")
    assert not (tmp_path / "d").exists()


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()}


@pytest.mark.parametrize("relations, weighted", [(3, False), (300, False), (3, True)])
def test_int_ids_written_while_reading_equal_the_spools_output(tmp_path, monkeypatch, relations, weighted):
    """With -p given, int ids go straight to their buckets; relations first seen out of sorted
    order are renumbered at the end, and columns already written are widened when the 257th
    relation appears (tiny blocks and a tiny buffer make every chunk reach disk first)."""
    rng = np.random.default_rng(5)
    names = [f"r{k:03d}" for k in range(relations)][::-1]  # first seen in reverse sorted order
    pairs = rng.integers(0, 90, (900, 2)).tolist()
    rows = [(a, names[min(i // 3, relations - 1)], b) for i, (a, b) in enumerate(pairs)]
    path = tmp_path / "e.tsv"
    path.write_text("".join(f"{a}\t{r}\t{b}\t{(a * 31 + b) % 7 / 4}\n" for a, r, b in rows))
    monkeypatch.setattr(engine, "read_blocks", functools.partial(engine.read_blocks, block_bytes=200))
    monkeypatch.setattr(engine, "MIN_WRITE_BUFFER", 1)
    spec = {"ids": "int", "columns": ColumnSpec.parse("lhs,rel,rhs,weight" if weighted else "lhs,rel,rhs,_")}
    direct = new_import(tmp_path / "direct", {"train": path}, 3, **spec)
    monkeypatch.setattr(engine, "DIRECT_WRITES", False)
    spooled = new_import(tmp_path / "spooled", {"train": path}, 3, **spec)
    assert not (tmp_path / "spooled" / ".spool").exists()
    assert tree_bytes(direct) == tree_bytes(spooled)
    dm = read_data_manifest(direct)
    assert dm.relations == sorted(names)
    assert dm.edge_dtypes["rel"] == np.dtype("uint8" if relations <= 256 else "int16")
    got = sum(buckets(direct)[0].values(), Counter())
    assert got == Counter((str(a), r, str(b)) for a, r, b in rows)
    assert dm.weighted == weighted and (Path(direct) / "edges/train/0_0/weight").exists() == weighted


@pytest.mark.parametrize("columns", ["lhs,rel,rhs", "lhs,rel,rhs,weight"])
def test_string_edges_put_back_in_order_window_by_window(tmp_path, monkeypatch, columns):
    """The join to the node ranks returns rows in any order; windows of 7 rowids (and a buffer
    that writes after every batch) give the same DATA, byte for byte, as one window."""
    rng = np.random.default_rng(8)
    path = tmp_path / "e.tsv"
    path.write_text("".join(f"n{a}\tr{c}\tn{b}\t{w:.3f}\n" for (a, b, c), w in
                            zip(rng.integers(0, 60, (500, 3)).tolist(), rng.random(500))))
    spec = {"columns": ColumnSpec.parse(columns)}
    whole = new_import(tmp_path / "whole", {"train": path}, 3, **spec)
    monkeypatch.setattr(engine, "MIN_WRITE_BUFFER", 1)
    monkeypatch.setattr(engine, "MIN_WINDOW_ROWS", 7)
    monkeypatch.setattr(engine, "import_budget", lambda spec: 1000)
    seen = []
    ranked = engine._ranked_batches
    monkeypatch.setattr(engine, "_ranked_batches", lambda *a, **k: seen.append(a[3]) or ranked(*a, **k))
    windows = new_import(tmp_path / "windows", {"train": path}, 3, **spec)
    assert seen == [7]
    assert tree_bytes(whole) == tree_bytes(windows)
    e = read_edges(whole, "train", Bucket(0, 1), read_data_manifest(whole).edge_count("train", Bucket(0, 1)),
                   weighted=columns.endswith("weight"), dtypes=read_data_manifest(whole).edge_dtypes)
    assert len(e.lhs) > 0


def test_an_int_id_beyond_int32_rows_names_its_line(tmp_path):
    path = tmp_path / "e.tsv"
    path.write_text(f"1\tr\t2\n3\tr\t{2 * 2**31 + 5}\n")
    with pytest.raises(InputFormatError, match=r"e.tsv:2: node id 4294967301 would be row 2147483650"):
        import_data(ImportSpec(sources=[Source("train", path)], num_partitions=2, ids="int", plan_memory=1 << 60),
                    tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_a_pipe_gives_the_same_data_as_the_file(tmp_path):
    path = tmp_path / "e.tsv"
    write_tiny_graph(path, edges=300)
    runner = CliRunner()
    r1 = runner.invoke(main, ["import", str(path), "-o", str(tmp_path / "a"), "-p", "2", "--no-progress"])
    r2 = runner.invoke(main, ["import", "-", "-o", str(tmp_path / "b"), "-p", "2", "--no-progress"],
                       input=path.read_bytes())
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.output + r2.output
    a, b = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in "ab")
    assert a["fingerprint"] == b["fingerprint"] and a["splits"] == b["splits"]
    assert b["sources"][0]["path"] == "-"


def test_a_bad_line_from_a_pipe_is_named_by_its_line(tmp_path):
    r = CliRunner().invoke(main, ["import", "-", "-o", str(tmp_path / "d"), "--no-progress"],
                           input=b"a\tr\tb\nb\tr\n")
    assert r.exit_code == 1
    assert "<stdin>:2: expected at least 3 fields" in r.output
    assert not (tmp_path / "d").exists()


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_while_a_pipe_stalls_ends_the_import_at_once(tmp_path):
    """The reader thread is blocked in a read of a pipe that has stopped sending; Ctrl-C must
    still end the import within seconds, exit 130, say so, and leave nothing (it once waited
    for the pipe, then aborted Python at shutdown over stdin's lock)."""
    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "wb") as feed:
        proc = subprocess.Popen([sys.executable, "-m", "bigembed.cli.main", "import", "-", "--ids", "int",
                                 "-o", str(tmp_path / "d"), "--no-progress"], stdin=read_fd, stderr=subprocess.PIPE,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        os.close(read_fd)
        feed.write(b"".join(b"%d\tr\t%d\n" % (i, i + 1) for i in range(50_000)))
        feed.flush()
        time.sleep(3)  # started, read what there was, now waiting on the pipe
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=15)
        finally:
            proc.kill()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert code == 130, err
    assert "interrupted: nothing was written" in err and "Fatal Python error" not in err
    assert list(tmp_path.iterdir()) == []


def test_parquet_by_column_name_and_by_position(tmp_path):
    pq.write_table(pa.table({"lhs": ["a", "b", "c"], "rel": ["x", "x", "y"], "rhs": ["b", "c", "a"]}),
                   tmp_path / "named.parquet")
    pq.write_table(pa.table({"src": [0, 1, 2], "dst": [1, 2, 0]}), tmp_path / "plain.parquet")
    named = new_import(tmp_path / "a", {"train": tmp_path / "named.parquet"}, 2)
    assert sum(buckets(named)[0].values(), Counter()) == Counter([("a", "x", "b"), ("b", "x", "c"), ("c", "y", "a")])
    plain = new_import(tmp_path / "b", {"train": tmp_path / "plain.parquet"}, 1, ids="int",
                       columns=ColumnSpec.parse("lhs,rhs"))
    assert sum(buckets(plain)[0].values(), Counter()) == Counter([("0", "edge", "1"), ("1", "edge", "2"),
                                                                 ("2", "edge", "0")])


def test_parquet_with_an_empty_id_names_the_row(tmp_path):
    pq.write_table(pa.table({"lhs": ["a", ""], "rhs": ["b", "c"]}), tmp_path / "e.parquet")
    with pytest.raises(Exception, match=r"e.parquet:2: empty node id"):
        new_import(tmp_path / "d", {"train": tmp_path / "e.parquet"}, 1, columns=ColumnSpec.parse("lhs,rhs"))
    assert not (tmp_path / "d").exists()


def test_parquet_progress_reaches_the_file_size_and_int_ids_stay_ints(tmp_path, monkeypatch):
    """Progress used to stay at 0 for Parquet; int id columns are no longer read as text."""
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"lhs": list(range(2000)), "rhs": [(i * 7) % 2000 for i in range(2000)]}), path,
                   row_group_size=300)
    monkeypatch.setattr(blocks, "read_parquet", functools.partial(blocks.read_parquet, batch_rows=300))
    seen: list[int] = []
    import_data(ImportSpec(sources=[Source("train", path)], num_partitions=2, ids="int",
                           columns=ColumnSpec.parse("lhs,rhs")), tmp_path / "d", progress=seen.append)
    assert len(seen) > 1 and all(step > 0 for step in seen) and sum(seen) == path.stat().st_size
    assert read_data_manifest(tmp_path / "d").num_entities == 2000
    pq.write_table(pa.table({"lhs": [1, 2, -3], "rhs": [0, 1, 2]}), tmp_path / "neg.parquet")
    with pytest.raises(InputFormatError, match=r"neg.parquet:3: negative node id '-3'"):
        new_import(tmp_path / "n", {"train": tmp_path / "neg.parquet"}, 1, ids="int",
                   columns=ColumnSpec.parse("lhs,rhs"))


def test_ids_that_all_hash_alike_stay_distinct_nodes(tmp_path, monkeypatch):
    path = tmp_path / "e.tsv"
    triples = write_tiny_graph(path, edges=200)
    monkeypatch.setattr(engine, "NODE_ORDER", "0")  # every name gets the same hash: the order key collides
    data = new_import(tmp_path / "d", {"train": path}, 3)
    dm = read_data_manifest(data)
    assert dm.num_entities == len({t[0] for t in triples} | {t[2] for t in triples})
    assert sum(buckets(data)[0].values(), Counter()) == Counter(triples)
    assert max(dm.entity_counts) - min(dm.entity_counts) <= 1


def test_many_nodes_under_a_small_budget_spill_and_import_right(tmp_path, monkeypatch):
    path = tmp_path / "e.tsv"
    n = 400_000
    rng = np.random.default_rng(1)
    ids = rng.permutation(n)
    with open(path, "w") as f:  # long distinct names: about 14 MB of them, more than 76 MB (60%) in DuckDB
        for a, b in zip(ids[: n // 2].tolist(), ids[n // 2 :].tolist()):
            f.write(f"node-with-a-long-name-{a:012d}\tr\tnode-with-a-long-name-{b:012d}\n")
    monkeypatch.setattr(engine, "import_budget", lambda spec: 128 << 20)
    spec = ImportSpec(sources=[Source("train", path)], num_partitions=2)
    _manifest, stats = import_data(spec, tmp_path / "d")
    assert stats.spilled_bytes > 0  # DuckDB wrote to its spill folder
    # the C dictionary (where a compiler is found) outgrew its 40% of the budget and moved there
    assert stats.dictionary in ("moved", "duckdb")
    dm = read_data_manifest(tmp_path / "d")
    assert dm.num_entities == n and dm.num_edges("train") == n // 2
    assert not list((tmp_path).glob(".d*"))  # the spill folder went with the temp output
    got = sum(buckets(tmp_path / "d")[0].values(), Counter())
    first = path.read_text().splitlines()[0].split("\t")
    assert got[(first[0], "r", first[2])] == 1 and sum(got.values()) == n // 2


def test_too_small_a_budget_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "e.tsv"
    with open(path, "w") as f:
        f.writelines(f"node-with-a-long-name-{i:012d}\tr\tnode-with-a-long-name-{i + 1:012d}\n" for i in range(200_000))
    monkeypatch.setattr(engine, "import_budget", lambda spec: 1 << 20)
    with pytest.raises(BigembedError) as info:
        new_import(tmp_path / "d", {"train": path}, 1)
    assert "needs more memory than" in str(info.value) and "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.tsv"]


def test_the_compact_layout_trains_evaluates_and_exports(tmp_path):
    files = {s: tmp_path / f"{s}.tsv" for s in ("train", "test")}
    write_tiny_graph(files["train"], seed=1, edges=600, nodes=60)
    write_tiny_graph(files["test"], seed=2, edges=30, nodes=60)
    runner = CliRunner()
    data, run = tmp_path / "data", tmp_path / "run"
    args = ["import", str(files["train"]), "--split", f"test={files['test']}", "-o", str(data), "-p", "2",
            "--no-progress"]
    assert runner.invoke(main, args).exit_code == 0
    assert read_data_manifest(data).edge_dtypes["lhs"] == np.int32
    r = runner.invoke(main, ["train", str(data), "-o", str(run), "--epochs", "2", "--dim", "8", "--no-progress"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["eval", str(run), str(data), "--split", "test"])
    assert r.exit_code == 0 and "MRR" in r.output, r.output
    r = runner.invoke(main, ["export", str(run), "--data", str(data), "-o", str(tmp_path / "emb"), "--format", "npy"])
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "emb" / "embeddings.npy").shape == (read_data_manifest(data).num_entities, 8)


def test_big_piped_or_compressed_string_edges_are_kept_in_a_database_file(tmp_path, monkeypatch):
    import gzip

    from bigembed.partitioner.engine import keep_on_disk

    plain, packed = tmp_path / "e.tsv", tmp_path / "e.tsv.gz"
    triples = write_tiny_graph(plain, edges=300)
    packed.write_bytes(gzip.compress(plain.read_bytes()))

    def spec(path, **kw):
        return ImportSpec(sources=[Source("train", path)], num_partitions=2, **kw)

    assert not keep_on_disk(spec(plain), 1 << 30)
    assert keep_on_disk(spec(plain), 1000)  # its table would not fit
    assert keep_on_disk(spec(Path("-")), 1 << 30) and keep_on_disk(spec(packed), 1 << 30)
    assert not keep_on_disk(spec(packed, ids="int"), 1000)  # int ids never use DuckDB's tables
    monkeypatch.setattr(engine, "NAME_DICTIONARY", False)  # DuckDB's path, as without a C compiler
    _manifest, stats = import_data(spec(packed), tmp_path / "d")
    assert stats.on_disk and stats.spilled_bytes > 0
    assert sum(buckets(tmp_path / "d")[0].values(), Counter()) == Counter(triples)
    in_memory = new_import(tmp_path / "m", {"train": plain}, 2)
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (tmp_path / "d", in_memory))
    assert a["fingerprint"] == b["fingerprint"]


@pytest.fixture
def c_dictionary():
    """The C node dictionary; its tests skip only where no C compiler is found (the import then
    uses DuckDB, tested on its own above)."""
    from bigembed.partitioner import dictionary

    lib = dictionary.library()
    if lib is None:
        pytest.skip("no C compiler: string ids go through DuckDB")
    return lib


def duckdb_import(monkeypatch, out: Path, files: dict[str, Path], partitions: int, **kw) -> Path:
    """The import with its dictionary in DuckDB, as where no C compiler is found."""
    with monkeypatch.context() as m:
        m.setattr(engine, "NAME_DICTIONARY", False)
        return new_import(out, files, partitions, **kw)


@pytest.mark.parametrize("partitions, columns", [(1, "lhs,rel,rhs"), (3, "lhs,rel,rhs"), (4, "lhs,rel,rhs,weight"),
                                                 (2, "lhs,rhs")])
def test_the_memory_dictionary_writes_what_duckdb_writes(tmp_path, monkeypatch, partitions, columns, c_dictionary):
    """The C dictionary and DuckDB must give the same DATA byte for byte: same ranks, names,
    buckets and fingerprints, over several splits, weights and many small blocks."""
    rng = np.random.default_rng(11)
    files = {}
    for split, n, nodes in (("train", 3000, 400), ("test", 200, 450)):  # some nodes only in test
        files[split] = tmp_path / f"{split}.tsv"
        lines = []
        for a, b, c, w in zip(*rng.integers(0, nodes, (2, n)), rng.integers(0, 5, n), rng.random(n)):
            # short names, names of exactly 16 and 17 bytes, and long ones sharing their first 16 bytes
            name = ["n{}", "x{:015d}", "y{:016d}", "a-long-shared-prefix-{}"][int(a) % 4]
            lines.append(f"{name.format(a)}\t{'r' + str(c)}\t{name.format(b)}\t{w:.4f}\n" if "rel" in columns
                         else f"{name.format(a)}\t{name.format(b)}\t{w:.4f}\n")
        files[split].write_text("".join(lines))
    spec = {"columns": ColumnSpec.parse(columns if "weight" in columns else columns + ",_")}
    monkeypatch.setattr(engine, "read_blocks", functools.partial(engine.read_blocks, block_bytes=4096))
    _manifest, stats = import_data(ImportSpec(sources=[Source(k, v) for k, v in files.items()],
                                              num_partitions=partitions, **spec), tmp_path / "memory")
    assert stats.dictionary == "memory"
    memory = tmp_path / "memory"
    duck = duckdb_import(monkeypatch, tmp_path / "duck", files, partitions, **spec)
    assert tree_bytes(memory) == tree_bytes(duck)
    assert read_data_manifest(memory).num_entities > 400


def test_the_memory_dictionary_keeps_entity_types_apart_as_duckdb_does(tmp_path, monkeypatch, c_dictionary):
    from tests.test_entity_types import schema_of, write_bipartite

    files = write_bipartite(tmp_path / "g")
    spec = {"schema": schema_of(), "columns": ColumnSpec.parse("lhs,rel,rhs")}
    a = new_import(tmp_path / "a", files, 3, **spec)
    b = duckdb_import(monkeypatch, tmp_path / "b", files, 3, **spec)
    assert tree_bytes(a) == tree_bytes(b)
    assert {t.name: t.total for t in read_data_manifest(a).entity_types} == {"user": 120, "item": 80}


def test_names_that_hash_alike_stay_apart_in_the_memory_dictionary(tmp_path, monkeypatch, c_dictionary):
    """With every hash bit masked off, every lookup probes one long chain: names must still be
    told apart by their bytes (and order keys that all collide broken by name, as in DuckDB)."""
    from bigembed.partitioner import dictionary

    path = tmp_path / "e.tsv"
    triples = write_tiny_graph(path, edges=300, nodes=80)
    plain = new_import(tmp_path / "plain", {"train": path}, 3)
    monkeypatch.setattr(dictionary, "HASH_MASK", 0)
    collided = new_import(tmp_path / "collided", {"train": path}, 3)
    assert tree_bytes(plain) == tree_bytes(collided)
    assert sum(buckets(collided)[0].values(), Counter()) == Counter(triples)
    monkeypatch.setattr(engine, "NODE_ORDER", "0")
    a = new_import(tmp_path / "a", {"train": path}, 3)
    b = duckdb_import(monkeypatch, tmp_path / "b", {"train": path}, 3)
    assert tree_bytes(a) == tree_bytes(b)


def test_a_dictionary_past_its_share_of_the_budget_moves_to_duckdb_midway(tmp_path, monkeypatch, c_dictionary):
    """The dictionary outgrows its share after a few blocks: the edges spooled so far go to
    DuckDB by name, the rest follow there, and the DATA is the same as all in memory."""
    from bigembed.partitioner.dictionary import NameDictionary

    train, test = tmp_path / "train.tsv", tmp_path / "test.tsv"
    write_tiny_graph(train, seed=1, edges=2000, nodes=300)
    write_tiny_graph(test, seed=2, edges=100, nodes=320)
    files = {"train": train, "test": test}
    monkeypatch.setattr(engine, "read_blocks", functools.partial(engine.read_blocks, block_bytes=2000))
    whole = new_import(tmp_path / "whole", files, 2)
    monkeypatch.setattr(NameDictionary, "memory", lambda self, adding=0: len(self) * 1000)  # 1000 bytes a node
    monkeypatch.setattr(engine, "import_budget", lambda spec: int(150_000 / engine.DICTIONARY_SHARE))
    logged: list[str] = []
    _manifest, stats = import_data(ImportSpec(sources=[Source(s, p) for s, p in files.items()], num_partitions=2),
                                   tmp_path / "moved", log=logged.append)
    assert stats.dictionary == "moved" and any("moving it to DuckDB" in line for line in logged)
    assert tree_bytes(whole) == tree_bytes(tmp_path / "moved")
    assert not (tmp_path / "moved" / ".spool").exists()


def test_without_a_c_compiler_string_ids_use_duckdb(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    monkeypatch.setenv("BIGEMBED_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "e.tsv"
    triples = write_tiny_graph(path, edges=200)
    _manifest, stats = import_data(ImportSpec(sources=[Source("train", path)], num_partitions=2), tmp_path / "d")
    assert stats.dictionary == "duckdb"
    assert sum(buckets(tmp_path / "d")[0].values(), Counter()) == Counter(triples)


@pytest.mark.parametrize("mask", [2**64 - 1, 0])
def test_the_name_dictionary_gives_first_seen_ids_by_type_and_bytes(monkeypatch, mask, c_dictionary):
    from bigembed.partitioner import dictionary

    monkeypatch.setattr(dictionary, "HASH_MASK", mask)
    names = dictionary.NameDictionary(c_dictionary)
    long = "p" * 16
    first = pa.array(["a", "", long + "1", long + "2", "a", "é", long + "1"])
    assert names.intern(first).tolist() == [0, 1, 2, 3, 0, 4, 2]
    # a slice of a large_string array, and the same names under another entity type
    second = pa.array(["zz", "a", "", long + "2"], pa.large_string()).slice(1)
    assert names.intern(second, np.array([0, 1, 1], np.int32)).tolist() == [0, 5, 6]
    assert names.intern(pa.array([], pa.string())).tolist() == []
    assert len(names) == 7
    exported, types = names.export()
    assert exported.to_pylist() == ["a", "", long + "1", long + "2", "é", "", long + "2"]
    assert types.tolist() == [0, 0, 0, 0, 0, 1, 1]
    grown = names.intern(pa.array([f"n{i}" for i in range(5000)] + ["a"]))
    assert grown[:-1].tolist() == list(range(7, 5007)) and grown[-1] == 0  # after the table grew
    # names longer than the slot's 16-bit length, alike but for their last byte
    huge = ["h" * 70_000 + "1", "h" * 70_000 + "2", "h" * 70_001]
    assert names.intern(pa.array(huge + huge)).tolist() == [5007, 5008, 5009, 5007, 5008, 5009]
    # a million more names would make the slot table double (at least 32 MiB more)
    assert names.memory(adding=10**6) - names.memory() >= 32 << 20
    names.close()


def test_a_dictionary_that_cannot_grow_moves_to_duckdb_with_the_block_it_was_given(tmp_path, monkeypatch,
                                                                                  c_dictionary):
    """malloc failing inside the C dictionary (less memory than the budget promised) is not an
    error: the spooled edges and the block at hand go to DuckDB and the import goes on."""
    from bigembed.partitioner.dictionary import NameDictionary

    path = tmp_path / "e.tsv"
    triples = write_tiny_graph(path, edges=1500, nodes=200)
    monkeypatch.setattr(engine, "read_blocks", functools.partial(engine.read_blocks, block_bytes=1500))
    whole = new_import(tmp_path / "whole", {"train": path}, 2)
    calls = []
    real = NameDictionary.intern

    def failing(self, *a, **k):
        calls.append(1)
        if len(calls) == 7:  # the lhs of the fourth block is in; its rhs fails
            raise MemoryError("the node dictionary could not grow")
        return real(self, *a, **k)

    monkeypatch.setattr(NameDictionary, "intern", failing)
    _manifest, stats = import_data(ImportSpec(sources=[Source("train", path)], num_partitions=2), tmp_path / "d")
    assert stats.dictionary == "moved" and len(calls) == 7
    assert tree_bytes(whole) == tree_bytes(tmp_path / "d")
    assert sum(buckets(tmp_path / "d")[0].values(), Counter()) == Counter(triples)


def test_the_import_command_says_how_many_nodes_it_ranks(tmp_path, c_dictionary):
    path = tmp_path / "e.tsv"
    triples = write_tiny_graph(path, edges=100)
    r = CliRunner().invoke(main, ["import", str(path), "-o", str(tmp_path / "d"), "--no-progress"])
    assert r.exit_code == 0, r.output
    nodes = len({t[0] for t in triples} | {t[2] for t in triples})
    assert f"ranking {nodes:,} distinct nodes" in r.output
