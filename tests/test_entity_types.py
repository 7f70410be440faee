"""Several entity types: a schema in the config, import per type, negatives and rankings
restricted to the right type, checkpoints and exports per type."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bigembed.checkpoint import read_current, read_manifest
from bigembed.cli.main import cli
from bigembed.config import load_config
from bigembed.errors import ConfigError, DataLayoutError, InputFormatError
from bigembed.evaluation import evaluate_full
from bigembed.evaluation.ranking import rank_split
from bigembed.partitioner import ImportSpec, Source, plan_import, write_plan
from bigembed.partitioner.plan import Schema
from bigembed.storage.data_manifest import read_data_manifest
from bigembed.storage.edges import Bucket, read_edges
from bigembed.storage.names import iter_names, names_dir
from bigembed.trainer import Model, PartitionState, RelationState, initial_params
from bigembed.trainer.batch import batch_loss
from bigembed.trainer.bucket import BucketTrainer, Slab
from bigembed.trainer.step import train_batch
from bigembed.training import train
from tests.conftest import PBG_STYLE

SCHEMA = """
[entities.user]
[entities.item]
[relations.likes]
lhs = "user"
rhs = "item"
[relations.friend]
lhs = "user"
rhs = "user"
"""


def write_schema(path: Path, text: str = SCHEMA) -> Path:
    path.write_text(text)
    return path


def write_bipartite(folder: Path, users: int = 120, items: int = 80, communities: int = 8,
                    seed: int = 0) -> dict[str, Path]:
    """Users like items of their community and befriend users of it. User and item ids
    are both plain numbers, so an import that ignored types would merge them."""
    rng = random.Random(seed)
    lines = []
    for u in range(users):
        c = u % communities
        lines += [f"{u}\tlikes\t{rng.randrange(items // communities) * communities + c}" for _ in range(10)]
        lines += [f"{u}\tfriend\t{rng.randrange(users // communities) * communities + c}" for _ in range(4)]
    rng.shuffle(lines)
    n = len(lines)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, (a, b) in {"train": (0, n * 8 // 10), "valid": (n * 8 // 10, n * 9 // 10),
                          "test": (n * 9 // 10, n)}.items():
        files[split] = folder / f"{split}.tsv"
        files[split].write_text("".join(line + "\n" for line in lines[a:b]))
    return files


def schema_of(text: str = SCHEMA, source: str = "schema.toml") -> Schema:
    import tomllib

    from bigembed.config import build_config, flatten

    schema = Schema.from_config(build_config(flatten(tomllib.loads(text))), source)
    assert schema is not None
    return schema


def typed_import(out: Path, files: dict[str, Path], partitions: int, **kw) -> Path:
    spec = ImportSpec(sources=[Source(s, p) for s, p in files.items()], num_partitions=partitions,
                      schema=kw.pop("schema", schema_of()), **kw)
    write_plan(plan_import(spec), out)
    return out


def decoded_edges(data: Path, split: str) -> list[tuple[str, str, str, str, str]]:
    """Every edge of ``split`` read back as (lhs type, lhs name, rel, rhs type, rhs name)."""
    dm = read_data_manifest(data)
    names = {}
    for p in range(dm.num_partitions):
        rows: list[tuple[str, str]] = []
        for etype in dm.entity_types:
            if dm.id_kind == "int":
                rows += [(etype.name, str(k * dm.num_partitions + p)) for k in range(etype.counts[p])]
            else:
                for chunk in iter_names(names_dir(data, etype.name, p), etype.counts[p]):
                    rows += [(etype.name, n) for n in chunk]
        names[p] = rows
    out = []
    for l in range(dm.num_partitions):
        for r in range(dm.num_partitions):
            count = dm.edge_count(split, Bucket(l, r))
            if not count:
                continue
            e = read_edges(data, split, Bucket(l, r), count, dtypes=dm.edge_dtypes)
            for a, rel, b in zip(np.asarray(e.lhs), np.asarray(e.rel), np.asarray(e.rhs), strict=True):
                out.append((*names[l][a], dm.relations[rel], *names[r][b]))
    return out


@pytest.mark.parametrize("ids", ["string", "int"])
def test_import_keeps_each_type_apart_and_every_edge_decodes(tmp_path, ids):
    files = write_bipartite(tmp_path / "g")
    data = typed_import(tmp_path / "data", files, 3, ids=ids)
    dm = read_data_manifest(data)
    assert dm.type_names == ["item", "user"]
    assert [dm.relations[r] for r in range(2)] == ["friend", "likes"]
    assert dm.relation_types == [(1, 1), (1, 0)]
    assert dm.entity_types[0].total == 80 and dm.entity_types[1].total == 120  # "5" the user != "5" the item
    for p in range(3):
        (a0, a1), (b0, b1) = dm.type_ranges(p)
        assert a0 == 0 and a1 == b0 and b1 == dm.entity_counts[p]
    for split, path in files.items():
        triples = [line.split("\t") for line in path.read_text().splitlines()]
        expected = sorted(("user", l, rel, "item" if rel == "likes" else "user", r) for l, rel, r in triples)
        assert sorted(decoded_edges(data, split)) == expected


def test_one_declared_type_is_every_relations_default(tmp_path):
    files = write_bipartite(tmp_path / "g")
    data = typed_import(tmp_path / "data", {"train": files["train"]}, 2, schema=schema_of("[entities.thing]\n"))
    dm = read_data_manifest(data)
    assert dm.type_names == ["thing"] and dm.relation_types == [(0, 0), (0, 0)]
    assert dm.entity_types[0].total == 120  # numbers shared by users and items are one node each


def test_schema_errors_name_the_key_or_the_line(tmp_path):
    files = write_bipartite(tmp_path / "g")
    with open(files["train"], "a") as f:
        f.write("7\tbuys\t3\n")
    last_line = len(files["train"].read_text().splitlines())
    with pytest.raises(InputFormatError, match=rf"train.tsv:{last_line}: relation 'buys' has no entity types "
                                               r"in schema.toml \(add \[relations.buys\]"):
        plan_import(ImportSpec(sources=[Source("train", files["train"])], schema=schema_of()))
    with pytest.raises(ConfigError, match=r"relations.likes.rhs: unknown entity type 'iteem' \(declared: item, user\)"):
        load_config(overrides={"entities.user": {}, "entities.item": {}, "relations.likes.lhs": "user",
                               "relations.likes.rhs": "iteem"})
    with pytest.raises(ConfigError, match=r"relations.likes.rhs is not set"):
        schema_of('[relations.likes]\nlhs = "user"\n[relations.friend]\nlhs = "user"\nrhs = "user"\n')
    with pytest.raises(ConfigError, match=r"relations.likes.lhs: an entity type name may use"):
        load_config(overrides={"relations.likes.lhs": "../x", "relations.likes.rhs": "item"})
    with pytest.raises(ConfigError, match=r"entities.user.name: expected an empty table"):
        load_config(overrides={"entities.user.name": "x"})


def _typed_state(dim: int = 3, seed: int = 0) -> PartitionState:
    gen = torch.Generator().manual_seed(seed)
    emb = torch.randn(12, dim, generator=gen)
    return PartitionState(emb, torch.zeros(12), ((0, 5), (5, 12)))  # type 0: rows 0-4, type 1: rows 5-11


def _typed_model(overrides: dict) -> tuple:
    config = load_config(overrides={**PBG_STYLE, "model.dim": 3, **overrides})
    model = Model.from_config(config, ["likes"], [(0, 1)], ["user", "item"])
    params = initial_params(model.specs, 3)
    return config, model, RelationState(model.specs, params, torch.zeros_like(params))


def test_sampled_negatives_are_rows_of_the_corrupted_sides_type():
    config, model, relations = _typed_model({"training.negatives": 50, "training.chunk_size": 2})
    state = _typed_state()
    lhs_idx, rhs_idx = torch.tensor([0, 1, 4]), torch.tensor([5, 9, 11])
    b = batch_loss(model, state, state, relations, 0, lhs_idx, rhs_idx, None, config.training,
                   torch.Generator().manual_seed(1))
    (corrupt_lhs_a, rhs_negs), (corrupt_lhs_b, lhs_negs) = b.sides
    assert not corrupt_lhs_a and corrupt_lhs_b
    assert rhs_negs.idx.min() >= 5 and rhs_negs.idx.max() <= 11  # items only
    assert lhs_negs.idx.min() >= 0 and lhs_negs.idx.max() <= 4  # users only
    assert set(rhs_negs.idx.flatten().tolist()) == set(range(5, 12))  # and every item comes up


@pytest.mark.parametrize("loss", ["softmax", "ranking"])
def test_all_negatives_rank_and_update_only_the_answers_type(loss):
    config, model, relations = _typed_model({"training.all_negatives": True, "training.negative_sides": "rhs",
                                             "model.loss": loss, "model.margin": 10.0})
    state = _typed_state()
    before = state.emb.clone()
    lhs_idx, rhs_idx = torch.tensor([0, 2]), torch.tensor([6, 10])
    b = batch_loss(model, state, state, relations, 0, lhs_idx, rhs_idx, None, config.training, torch.Generator())
    (_, negs), = b.sides
    assert negs.table is not None and negs.table.shape[0] == 7 and negs.start == 5
    # the loss is over the 7 items: a direct computation
    scores = state.emb[lhs_idx] @ state.emb[5:12].T
    if loss == "softmax":
        expected = torch.nn.functional.cross_entropy(scores, rhs_idx - 5, reduction="sum")
    else:
        pos = scores[torch.arange(2), rhs_idx - 5].unsqueeze(1)
        keep = torch.ones_like(scores, dtype=torch.bool)
        keep[torch.arange(2), rhs_idx - 5] = False
        expected = (10.0 - pos + scores).clamp(min=0)[keep].sum()
    assert torch.allclose(b.loss.detach(), expected, rtol=1e-5)
    train_batch(model, state, state, relations, 0, lhs_idx, rhs_idx, None, config.training, torch.Generator())
    changed = (state.emb != before).any(1)
    assert changed[5:].all()  # every item moved
    assert changed[:5].tolist() == [True, False, True, False, False]  # of the users, only the batch's lhs


def test_degree_pools_hold_only_endpoints_of_the_type():
    config = load_config(overrides={**PBG_STYLE, "model.dim": 3})
    model = Model.from_config(config, ["friend", "likes"], [(1, 1), (1, 0)], ["item", "user"])
    trainer = BucketTrainer(model, config.training)
    trainer.close()
    types = trainer.side_types
    assert types is not None
    slab = Slab(torch.tensor([0, 1, 2, 3]), torch.tensor([10, 11, 12, 13]), torch.tensor([0, 1, 1, 0]), None)
    assert slab.pool("rhs", 0, types["rhs"]).tolist() == [11, 12]  # items: rhs of likes
    assert slab.pool("rhs", 1, types["rhs"]).tolist() == [10, 13]  # users: rhs of friend
    assert slab.pool("lhs", 1, types["lhs"]).tolist() == [0, 1, 2, 3]
    assert slab.pool("lhs", 0, types["lhs"]).tolist() == []
    assert slab.pool("rhs", 0, None) is slab.rhs  # one pair of types: the whole column


def test_full_ranking_counts_only_candidates_of_the_answers_type(tmp_path):
    """Every user scores far above every item against every query: ranking items among all
    nodes would put each true item below 120 users; among items it is 1st or close."""
    files = write_bipartite(tmp_path / "g")
    data = typed_import(tmp_path / "data", files, 2)
    dm = read_data_manifest(data)
    config = load_config(overrides={**PBG_STYLE, "model.dim": 2})
    model = Model.for_data(config, dm)
    relations = RelationState(model.specs, torch.zeros(0), torch.zeros(0))

    def load(p: int) -> torch.Tensor:
        (i0, i1), (u0, u1) = dm.type_ranges(p)
        emb = torch.zeros(dm.entity_counts[p], 2)
        emb[i0:i1] = torch.tensor([1.0, 0.0])  # all items tie
        emb[u0:u1] = torch.tensor([100.0, 0.0])
        return emb

    out = rank_split(dm, "test", load, model, relations, False, 2, per_relation=True)
    likes = out["relations"]["likes"]
    # rhs of likes: the true item ties with every other item not filtered out: rank <= (80 + 1) / 2
    assert likes["rhs"]["mean_rank"] <= 40.5
    # lhs of likes: users tie with users: rank among 120 users at most (120 + 1) / 2
    assert likes["lhs"]["mean_rank"] <= 60.5
    assert "entity type" in out["protocol"]


def test_typed_training_learns_resumes_and_exports_per_type(tmp_path):
    files = write_bipartite(tmp_path / "g")
    data = typed_import(tmp_path / "data", files, 3)
    overrides = {"model.dim": 16, "training.epochs": 4, "training.negatives": 20}
    train(data, tmp_path / "run", None, overrides, log=lambda _: None, show_progress=False)
    run = tmp_path / "run"
    manifest = read_manifest(run, read_current(run))
    assert {k for k in manifest.shards if k.startswith("emb/")} == {
        f"emb/{t}/{p}" for t in ("item", "user") for p in range(3)}
    metrics = evaluate_full(run, manifest, read_data_manifest(data), load_config(overrides=overrides), "test",
                            per_relation=True)
    # random ranking among a type: MRR about ln(n)/n, below 0.06 for 80 items and 120 users
    assert metrics["relations"]["likes"]["mrr"] > 0.15 and metrics["mrr"] > 0.12
    runner = CliRunner()
    r = runner.invoke(cli, ["export", str(run), "-o", str(tmp_path / "npy"), "--format", "npy", "--no-progress"])
    assert r.exit_code == 0, r.output
    items = np.load(tmp_path / "npy" / "embeddings_item.npy")
    users = np.load(tmp_path / "npy" / "embeddings_user.npy")
    assert items.shape == (80, 16) and users.shape == (120, 16)
    assert sorted((tmp_path / "npy" / "names_item.txt").read_text().split(), key=int) == [str(i) for i in range(80)]
    layout = json.loads((tmp_path / "npy" / "relations.json").read_text())["relations"]
    assert [(x["name"], x["lhs"], x["rhs"]) for x in layout] == [  # reciprocal by default: the inverses after
        ("friend", "user", "user"), ("likes", "user", "item"),
        ("friend (inverse)", "user", "user"), ("likes (inverse)", "item", "user")]
    # projector: one metadata file for both types, with a header and a type column
    r = runner.invoke(cli, ["export", str(run), "-o", str(tmp_path / "proj"), "--format", "projector",
                            "--sample", "50", "--no-progress"])
    assert r.exit_code == 0, r.output
    meta = (tmp_path / "proj" / "metadata.tsv").read_text().splitlines()
    vectors = np.loadtxt(tmp_path / "proj" / "vectors.tsv", delimiter="\t", dtype=np.float32)
    assert meta[0] == "name\ttype" and len(meta) == 51 and vectors.shape == (50, 16)
    by_type = {t: dict(zip((tmp_path / "npy" / f"names_{t}.txt").read_text().split(), m, strict=True))
               for t, m in (("item", items), ("user", users))}
    pairs = [line.split("\t") for line in meta[1:]]
    assert {t for _, t in pairs} == {"item", "user"} and len(set(map(tuple, pairs))) == 50
    assert np.allclose(vectors, np.stack([by_type[t][n] for n, t in pairs]), rtol=1e-6, atol=0)
    # one more epoch resumes on the same typed DATA
    train(data, run, None, {**overrides, "training.epochs": 5}, log=lambda _: None, show_progress=False)
    assert read_manifest(run, read_current(run)).position.epoch == 5


def test_a_training_config_that_contradicts_the_datas_types_is_refused(tmp_path):
    files = write_bipartite(tmp_path / "g")
    data = typed_import(tmp_path / "data", {"train": files["train"]}, 1)
    with pytest.raises(ConfigError, match=r"relations.likes.rhs: 'user' in the config, but the DATA's likes "
                                          r"has rhs type 'item'"):
        train(data, tmp_path / "run", None, {"relations.likes.lhs": "user", "relations.likes.rhs": "user"},
              log=lambda _: None, show_progress=False)
    assert not (tmp_path / "run" / "config.json").exists()


def test_cli_import_with_config_and_info(tmp_path):
    files = write_bipartite(tmp_path / "g")
    schema = write_schema(tmp_path / "schema.toml")
    r = CliRunner().invoke(cli, ["import", str(files["train"]), "-o", str(tmp_path / "data"), "-p", "2",
                                 "--config", str(schema), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "of types item=80, user=120" in r.output
    r = CliRunner().invoke(cli, ["info", str(tmp_path / "data")])
    assert "entity types: item (80), user (120)" in r.output
    assert "likes (user -> item)" in r.output


def test_a_version_1_manifest_still_reads(tmp_path):
    files = write_bipartite(tmp_path / "g")
    data = typed_import(tmp_path / "data", {"train": files["train"]}, 2, schema=None)
    manifest = json.loads((data / "manifest.json").read_text())
    assert list(manifest["entities"]) == ["node"]
    manifest["format_version"] = 1
    manifest.pop("edge_dtypes", None)  # version 1 had none: its columns were int64, int64, int32
    (data / "manifest.json").write_text(json.dumps(manifest))
    dm = read_data_manifest(data)
    assert dm.type_names == ["node"] and not dm.typed
    assert [d.name for d in dm.edge_dtypes.values()] == ["int64", "int64", "int32"]
    manifest["entities"]["node"]["counts"] = [1]  # one count for two partitions
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataLayoutError, match="manifest is missing or has a malformed field"):
        read_data_manifest(data)
