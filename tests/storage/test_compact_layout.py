"""DATA format 3: the manifest's ``edge_dtypes`` say what the bucket columns hold, and
every reader (training, both evals, export, info) gives the same results on the compact
layout as on the old one; format 2 DATA (no ``edge_dtypes``) still reads."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bigembed.checkpoint import emb_key, read_current, read_manifest, read_shard_of
from bigembed.cli.main import cli
from bigembed.errors import DataLayoutError
from bigembed.storage.atomic import atomic_output_dir, atomic_write_json
from bigembed.storage.data_manifest import READABLE_VERSIONS, read_data_manifest
from bigembed.storage.edges import Bucket, EdgeDtypes, append_edges, bucket_dir, compact_dtypes, read_edges
from tests.conftest import import_files, write_tiny_graph

OLD = {"lhs": np.dtype("int64"), "rhs": np.dtype("int64"), "rel": np.dtype("int32")}
MIXED = {"lhs": np.dtype("int32"), "rhs": np.dtype("int64"), "rel": np.dtype("int16")}


def run(*args: Any):
    return CliRunner().invoke(cli, [str(a) for a in args])


def relayout(src: Path, dst: Path, dtypes: EdgeDtypes | None) -> Path:
    """A copy of DATA ``src`` at ``dst`` with every bucket read back and written again:
    ``dtypes`` None gives format 2 (int64, int64, int32 columns, no ``edge_dtypes``), else
    format 3 with those column dtypes. Whatever layout ``src`` has (the importer may write
    either), the copy has the one asked for."""
    dm = read_data_manifest(src)
    with atomic_output_dir(dst, "relayout") as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        shutil.rmtree(tmp / "edges")
        for split in dm.splits():
            for key, count in dm.bucket_counts[split].items():
                bucket = Bucket(*map(int, key.split("_")))
                edges = read_edges(src, split, bucket, count, dm.weighted, dm.edge_dtypes)
                folder = bucket_dir(tmp, split, bucket)
                folder.mkdir(parents=True)
                if count:
                    append_edges(folder, edges, dtypes)
        raw = dict(dm.raw)
        raw.pop("edge_dtypes", None)
        raw["format_version"] = 2 if dtypes is None else 3
        if dtypes is not None:
            raw["edge_dtypes"] = {column: np.dtype(d).name for column, d in dtypes.items()}
        atomic_write_json(tmp / "manifest.json", raw)
    return dst


def write_weighted_graph(path: Path, seed: int, edges: int, nodes: int = 60, relations: int = 4) -> None:
    rng = random.Random(seed)
    path.write_text("".join(
        f"v{rng.randrange(nodes)}\tr{rng.randrange(relations)}\tv{rng.randrange(nodes)}\t{rng.choice((0.5, 1, 2))}\n"
        for _ in range(edges)))


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, Path]:
    """One weighted graph imported the current way, then copied into the old layout (format 2)
    and two compact ones (format 3)."""
    root = tmp_path_factory.mktemp("compact")
    for split, seed, n in (("train", 1, 600), ("valid", 2, 60), ("test", 3, 60)):
        write_weighted_graph(root / f"{split}.tsv", seed, n)
    r = run("import", root / "train.tsv", "--split", f"valid={root / 'valid.tsv'}", "--split",
            f"test={root / 'test.tsv'}", "--columns", "lhs,rel,rhs,weight", "-o", root / "imported", "-p", "3",
            "--no-progress")
    assert r.exit_code == 0, r.output
    dm = read_data_manifest(root / "imported")
    assert dm.weighted and len(dm.relations) == 4
    compact = compact_dtypes(max(dm.entity_counts), len(dm.relations))
    assert compact == {"lhs": np.dtype("int32"), "rhs": np.dtype("int32"), "rel": np.dtype("uint8")}
    return {"old": relayout(root / "imported", root / "old", None),
            "compact": relayout(root / "imported", root / "compact", compact),
            "mixed": relayout(root / "imported", root / "mixed", MIXED)}


def test_the_copies_hold_the_layout_their_manifest_says(layouts):
    sizes = {}
    for name, dtypes in (("old", OLD), ("compact", compact_dtypes(20, 4)), ("mixed", MIXED)):
        dm = read_data_manifest(layouts[name])
        assert dm.raw["format_version"] == (2 if name == "old" else 3)
        assert ("edge_dtypes" in dm.raw) == (name != "old")  # format 2 DATA has none, and reads
        assert dm.edge_dtypes == dtypes
        count = dm.edge_count("train", Bucket(0, 1))
        folder = bucket_dir(layouts[name], "train", Bucket(0, 1))
        sizes[name] = sum((folder / c / "data.ninja").stat().st_size for c in ("lhs", "rhs", "rel"))
        assert sizes[name] == count * sum(d.itemsize for d in dtypes.values())
        info = run("info", layouts[name])
        assert info.exit_code == 0, info.output
        assert "edge columns: " + ", ".join(f"{c} {d.name}" for c, d in dtypes.items()) in info.output
    assert sizes["compact"] * 20 == sizes["old"] * 9  # 9 bytes an edge instead of 20
    for split in ("train", "test"):  # the same edges, whatever the layout
        for key, count in read_data_manifest(layouts["old"]).bucket_counts[split].items():
            columns = []
            for name in ("old", "compact", "mixed"):
                dm = read_data_manifest(layouts[name])
                e = read_edges(layouts[name], split, Bucket(*map(int, key.split("_"))), count, True, dm.edge_dtypes)
                columns.append([e.lhs.tolist(), e.rhs.tolist(), e.rel.tolist(), e.weight.tolist()])
            assert columns[0] == columns[1] == columns[2]


def without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items()
                if k not in {"time", "seconds", "io_wait_s", "edges_per_s", "commit_s", "max_rss_bytes"}}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


TRAIN = ("--dim", "8", "--epochs", "2", "--deterministic", "--seed", "3", "--set", "training.edge_chunks=2",
         "--set", "training.eval_every=1", "--set", "training.degree_fraction=0.5", "--no-progress")


@pytest.fixture(scope="module")
def runs(layouts, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, data in layouts.items():
        r = run("train", data, "-o", root / name, *TRAIN)
        assert r.exit_code == 0, r.output
        out[name] = root / name
    return out


def test_training_on_a_compact_layout_is_bit_identical(runs):
    stats = {name: [without_timings(json.loads(line)) for line in (path / "stats.jsonl").read_text().splitlines()]
             for name, path in runs.items()}
    assert sum(s.get("edges", 0) for s in stats["old"] if "bucket_index" in s) == 2 * 600
    assert stats["compact"] == stats["old"] and stats["mixed"] == stats["old"]  # losses to the last bit
    evals = {name: without_timings(json.loads((path / "evals.json").read_text())) for name, path in runs.items()}
    assert len(evals["old"]["history"]) == 2
    assert evals["compact"] == evals["old"] and evals["mixed"] == evals["old"]
    shards = {}
    for name, path in runs.items():
        manifest = read_manifest(path, read_current(path))
        shards[name] = {k: read_shard_of(path, manifest, k) for k in manifest.shards}  # embeddings, optimizer state
    assert {emb_key("node", p) for p in range(3)} <= set(shards["old"])
    for name in ("compact", "mixed"):
        assert shards[name].keys() == shards["old"].keys()
        assert all(np.array_equal(shards[name][k], shards["old"][k]) for k in shards["old"])


@pytest.mark.parametrize("protocol", ["filtered", "raw", "sampled"])
def test_eval_on_a_compact_layout_gives_the_same_metrics(runs, layouts, protocol):
    metrics = {}
    for run_name, data_name in (("old", "old"), ("old", "compact"), ("old", "mixed"), ("compact", "compact")):
        r = run("eval", runs[run_name], layouts[data_name], "--protocol", protocol, "--negatives", "15",
                "--per-relation", "--json", "-", "--no-progress")
        assert r.exit_code == 0, r.output
        metrics[run_name, data_name] = without_timings(json.loads(r.output))
    reference = metrics["old", "old"]
    assert reference["count"] == 60 and 0 < reference["mrr"] <= 1
    assert all(m == reference for m in metrics.values())


@pytest.mark.parametrize("fmt", ["tsv", "npy"])
def test_export_on_a_compact_layout_gives_the_same_embeddings(runs, layouts, tmp_path, fmt):
    outputs = {}
    for name in ("old", "compact", "mixed"):
        out = tmp_path / name
        r = run("export", runs[name], "-o", out, "--format", fmt, "--data", layouts[name], "--no-progress")
        assert r.exit_code == 0, r.output
        outputs[name] = {f.name: f.read_bytes() for f in sorted(out.iterdir())}
    assert outputs["old"] and outputs["compact"] == outputs["old"] and outputs["mixed"] == outputs["old"]


# --- the manifest's edge_dtypes, checked on read ---------------------------------------

@pytest.fixture
def data(tmp_path) -> Path:
    write_tiny_graph(tmp_path / "g.tsv")
    return import_files(tmp_path / "data", {"train": tmp_path / "g.tsv"}, 2)


def rewrite(data: Path, edit) -> None:
    raw = json.loads((data / "manifest.json").read_text())
    edit(raw)
    atomic_write_json(data / "manifest.json", raw)


def test_format_3_is_readable():
    assert 3 in READABLE_VERSIONS and 2 in READABLE_VERSIONS


def test_a_manifest_without_edge_dtypes_has_the_old_ones(data):
    def v2(raw):
        raw["format_version"] = 2
        raw.pop("edge_dtypes", None)
    rewrite(data, v2)
    assert read_data_manifest(data).edge_dtypes == OLD


def set_edge_dtypes(value):
    def edit(raw):
        raw["format_version"] = 3
        raw.pop("edge_dtypes", None)
        if value is not None:
            raw["edge_dtypes"] = value
    return edit


@pytest.mark.parametrize(("edit", "words"), [
    (set_edge_dtypes(None), "format_version 3 needs edge_dtypes"),
    (set_edge_dtypes("int32"), "format_version 3 needs edge_dtypes"),
    (set_edge_dtypes({"lhs": "int32", "rhs": "int32"}), "edge_dtypes.rel must be one of uint8, int16, int32, "
                                                        "it is missing"),
    (set_edge_dtypes({"rhs": "int32", "rel": "uint8"}), "edge_dtypes.lhs must be one of int32, int64, it is missing"),
    (set_edge_dtypes({"lhs": "int32", "rhs": "int32", "rel": "uint16"}), "edge_dtypes.rel must be one of uint8, "
                                                                         "int16, int32, got 'uint16'"),
    (set_edge_dtypes({"lhs": "int32", "rhs": "float32", "rel": "uint8"}), "edge_dtypes.rhs must be one of int32, "
                                                                          "int64, got 'float32'"),
    (set_edge_dtypes({"lhs": "int16", "rhs": "int32", "rel": "uint8"}), "edge_dtypes.lhs must be one of"),
    (set_edge_dtypes({"lhs": ["int32"], "rhs": "int32", "rel": "uint8"}), "edge_dtypes.lhs must be one of"),
    (lambda raw: raw.update(format_version=2, edge_dtypes={"lhs": "int32", "rhs": "int32", "rel": "uint8"}),
     "edge_dtypes needs format_version 3, this manifest says 2"),
])
def test_a_bad_or_missing_edge_dtypes_is_refused_in_one_line(data, edit, words):
    rewrite(data, edit)
    with pytest.raises(DataLayoutError) as info:
        read_data_manifest(data)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{data / 'manifest.json'}: ") and words in message
    r = run("info", data)  # and through the command line: one error line
    assert r.exit_code == 1 and [line for line in r.output.splitlines() if words in line] == r.output.splitlines()


def test_edge_dtypes_too_narrow_for_the_data_are_refused(data):
    def huge_partition(raw):
        set_edge_dtypes({"lhs": "int64", "rhs": "int32", "rel": "uint8"})(raw)
        raw["entities"]["node"]["counts"] = [2**31, 1]
    rewrite(data, huge_partition)
    with pytest.raises(DataLayoutError, match=r"edge_dtypes.lhs/rhs int32 cannot hold the offsets of a partition "
                                              r"of 2147483648 rows"):
        read_data_manifest(data)

    def many_relations(raw):
        set_edge_dtypes({"lhs": "int32", "rhs": "int32", "rel": "uint8"})(raw)
        raw["entities"]["node"]["counts"] = [2**31 - 1, 1]  # int32 offsets fit
        raw["relations"] = [{"name": f"r{i}", "lhs": "node", "rhs": "node"} for i in range(257)]
    rewrite(data, many_relations)
    with pytest.raises(DataLayoutError, match="edge_dtypes.rel uint8 cannot hold 257 relation ids"):
        read_data_manifest(data)
    rewrite(data, lambda raw: raw["relations"].pop())  # 256 relations: ids 0..255 fit
    assert read_data_manifest(data).edge_dtypes["rel"] == np.uint8


def test_old_columns_under_a_compact_manifest_are_refused_when_read(data, tmp_path):
    """A manifest edited to say compact over old files (or the other way round) is caught by
    the first reader, in one line naming the column, not read as garbage."""
    had = read_data_manifest(data).edge_dtypes
    claim = compact_dtypes(100, 3) if had["lhs"] == np.int64 else OLD  # what the files do not hold
    rewrite(data, set_edge_dtypes({c: d.name for c, d in claim.items()}))
    r = run("train", data, "-o", tmp_path / "run", "--dim", "4", "--epochs", "1", "--no-progress")
    assert r.exit_code == 1
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    column = next(c for c in ("lhs", "rhs", "rel") if claim[c] != had[c])
    assert len(errors) == 1, r.output
    assert f"/{column}: expected" in errors[0] and f"{claim[column].name} values" in errors[0]
    assert "re-import the edges" in errors[0]


def test_training_batches_get_int64_views_of_a_slab_widened_once(layouts, tmp_path, monkeypatch):
    """The native kernels take int64 ids (with others training falls back to slower torch code,
    with the same results, so the bit-identity above cannot tell): a compact slab is widened
    when it is read, and each batch is a view of it, not a per-batch conversion."""
    import bigembed.trainer.bucket as bucket_module

    seen = []
    real = bucket_module.train_batch

    def watch(model, lhs, rhs, relations, relation, li, ri, w, config, generator, pools, rels, extras, lib):
        seen.append((li.dtype, ri.dtype, li._is_view(), ri._is_view(),
                     None if pools is None else (pools[0].dtype, pools[1].dtype)))
        return real(model, lhs, rhs, relations, relation, li, ri, w, config, generator, pools, rels, extras, lib)

    monkeypatch.setattr(bucket_module, "train_batch", watch)
    r = run("train", layouts["compact"], "-o", tmp_path / "run", *TRAIN)
    assert r.exit_code == 0, r.output
    assert seen and set(seen) == {(torch.int64, torch.int64, True, True, (torch.int64, torch.int64))}
