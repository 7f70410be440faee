"""The model zoo end to end: every operator, comparator and loss learns; weights, validation, early stopping."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import bigembed.evaluation.validation as validation
from bigembed.checkpoint import read_current, read_manifest, read_shard_of
from bigembed.checkpoint.versions import list_versions
from bigembed.config import load_config
from bigembed.errors import ConfigError
from bigembed.evaluation import evaluate_full
from bigembed.generator import GraphSpec, write_graph
from bigembed.partitioner.reader import ColumnSpec
from bigembed.storage.data_manifest import read_data_manifest
from bigembed.training import train
from tests.conftest import import_files

pytestmark = pytest.mark.slow

SPEC = GraphSpec(nodes=600, edges=12000, relations=3, communities=30, seed=7)
RANDOM_FILTERED_MRR = 0.02  # filtered MRR of an untrained embedding here; test_random_baseline checks it


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> dict[str, Path]:
    return write_graph(SPEC, tmp_path_factory.mktemp("graph"))


@pytest.fixture(scope="module")
def data1(graph, tmp_path_factory) -> Path:
    return import_files(tmp_path_factory.mktemp("d1") / "data", graph, 1)


@pytest.fixture(scope="module")
def data4(graph, tmp_path_factory) -> Path:
    return import_files(tmp_path_factory.mktemp("d4") / "data", graph, 4)


def filtered_mrr(run: Path, data: Path, overrides: dict, split: str = "test") -> float:
    manifest = read_manifest(run, read_current(run))
    return evaluate_full(run, manifest, read_data_manifest(data), load_config(overrides=overrides), split)["mrr"]


def train_and_rank(tmp_path: Path, data: Path, overrides: dict) -> float:
    run = tmp_path / "run"
    overrides = {"model.dim": 16, "training.epochs": 3, **overrides}
    train(data, run, None, overrides, log=quiet, show_progress=False)
    return filtered_mrr(run, data, overrides)


def test_random_baseline(tmp_path, data1):
    """An untrained (epochs 0) embedding scores about the random MRR the other tests compare with."""
    mrr = train_and_rank(tmp_path, data1, {"training.epochs": 0})
    assert 0.5 * RANDOM_FILTERED_MRR < mrr < 1.25 * RANDOM_FILTERED_MRR, mrr


# the shared cases; tests/test_registries.py checks that they cover every registered name
ZOO_OPERATORS = ["none", "translation", "diagonal", "linear", "affine", "complex_diagonal", "rotation"]
ZOO_COMPARATOR_LOSS = [("cos", "ranking"), ("squared_l2", "ranking"), ("dot", "logistic"), ("dot", "softmax")]
ROTATION_COMPARATOR = "l2"


@pytest.mark.parametrize("operator", ZOO_OPERATORS)
def test_every_operator_learns(tmp_path, data1, operator):
    extra = {"model.comparator": ROTATION_COMPARATOR} if operator == "rotation" else {}
    mrr = train_and_rank(tmp_path, data1, {"model.operator": operator, **extra})
    assert mrr > 2.5 * RANDOM_FILTERED_MRR, mrr


@pytest.mark.parametrize("comparator, loss", ZOO_COMPARATOR_LOSS)
def test_every_comparator_and_loss_learns(tmp_path, data1, comparator, loss):
    overrides = {"model.comparator": comparator, "model.loss": loss}
    if comparator == "cos":  # scale-free scores: tiny initial rows make every step a jump
        overrides.update({"model.margin": 0.2, "model.init_scale": 0.1})
    mrr = train_and_rank(tmp_path, data1, overrides)
    assert mrr > 2.5 * RANDOM_FILTERED_MRR, mrr


RECIPE = {"model.operator": "complex_diagonal", "model.loss": "softmax", "model.reciprocal": True,
          "model.regularizer": "n3", "model.regularization": 0.01, "training.all_negatives": True,
          "training.batch_size": 200}


def test_all_negatives_reciprocal_recipe_matches_across_partitions(tmp_path, data1, data4):
    one = train_and_rank(tmp_path / "p1", data1, RECIPE)
    four = train_and_rank(tmp_path / "p4", data4, RECIPE)
    assert one > 2.5 * RANDOM_FILTERED_MRR and four > 2.5 * RANDOM_FILTERED_MRR, (one, four)
    assert abs(one - four) < 0.05, (one, four)


def test_degree_negatives_and_max_norm(tmp_path, data4):
    # Degree negatives are the popular nodes, which the filtered ranking of this skewed graph
    # rewards least: with half the negatives from degree, 3 epochs reached 0.048-0.061
    # (one CI run fell under the bound); with a quarter, 0.058-0.064 on the first generator's
    # graph and 0.043-0.052 over 6 runs on the closed-form sampler's (issue 17; 0.062 on average
    # over 11 other seeds, where the first generator averaged 0.058). Random: 0.02.
    # one worker: two Hogwild workers writing one row at once can leave it a little over max_norm
    overrides = {"training.degree_fraction": 0.25, "model.max_norm": 1.0, "model.operator": "diagonal",
                 "training.workers": 1}
    mrr = train_and_rank(tmp_path, data4, overrides)
    assert mrr > 1.8 * RANDOM_FILTERED_MRR
    manifest = read_manifest(tmp_path / "run", read_current(tmp_path / "run"))
    for p in range(4):
        emb = read_shard_of(tmp_path / "run", manifest, f"emb/node/{p}")
        assert np.linalg.norm(emb, axis=1).max() <= 1.0 + 1e-5


def test_per_relation_settings_from_a_config_file(tmp_path, data1):
    config = tmp_path / "c.toml"
    config.write_text('[model]\noperator = "diagonal"\n[relations.r1]\noperator = "linear"\nweight = 2.0\n'
                      '[relations.r2]\noperator = "none"\nnegative_sides = "rhs"\n')
    run = tmp_path / "run"
    train(data1, run, config, {"model.dim": 8, "training.epochs": 1, "model.reciprocal": False}, log=quiet,
          show_progress=False)
    saved = json.loads((run / "config.json").read_text())["config"]
    assert saved["relations"]["r1"]["operator"] == "linear" and saved["relations"]["r2"]["negative_sides"] == "rhs"
    manifest = read_manifest(run, read_current(run))
    params = read_shard_of(run, manifest, "relations/params")
    assert params.shape == (8 + 64,)  # r0 diagonal, r1 linear, r2 none
    bad = tmp_path / "bad.toml"
    bad.write_text('[relations.nope]\noperator = "linear"\n')
    with pytest.raises(ConfigError, match="relations.nope: no relation named 'nope'"):
        train(data1, tmp_path / "run2", bad, {}, log=quiet, show_progress=False)
    assert not (tmp_path / "run2" / "config.json").exists()


def test_zero_weight_edges_teach_nothing(tmp_path):
    path = tmp_path / "w.tsv"
    rows = [f"v{i}\tr\tv{(i * 7) % 50}\t{w}\n" for i in range(200) for w in ["0"]]
    path.write_text("".join(rows))
    data = import_files(tmp_path / "data", {"train": path}, 1, columns=ColumnSpec.parse("lhs,rel,rhs,weight"))
    run = tmp_path / "run"
    overrides = {"model.dim": 4, "training.epochs": 1, "training.negatives": 5}
    train(data, run, None, overrides, log=quiet, show_progress=False)
    v0 = read_shard_of(run, read_manifest(run, 0), "emb/node/0")
    v1 = read_shard_of(run, read_manifest(run, 1), "emb/node/0")
    assert np.array_equal(v0, v1)
    path.write_text("".join(r.replace("\t0\n", "\t0.5\n") for r in rows))
    data2 = import_files(tmp_path / "data2", {"train": path}, 1, columns=ColumnSpec.parse("lhs,rel,rhs,weight"))
    train(data2, tmp_path / "run2", None, overrides, log=quiet, show_progress=False)
    w1 = read_shard_of(tmp_path / "run2", read_manifest(tmp_path / "run2", 1), "emb/node/0")
    assert not np.array_equal(v0, w1)


def test_validation_every_epoch_is_logged(tmp_path, data1):
    run = tmp_path / "run"
    train(data1, run, None, {"model.dim": 8, "training.epochs": 2, "training.eval_every": 1}, log=quiet,
          show_progress=False)
    evals = json.loads((run / "evals.json").read_text())
    assert [r["epoch"] for r in evals["history"]] == [1, 2]
    assert evals["history"][1]["mrr"] == pytest.approx(filtered_mrr(run, data1, {"model.dim": 8}, "valid"))
    assert evals["best"]["mrr"] == max(r["mrr"] for r in evals["history"])


def test_early_stopping_keeps_the_best_version(tmp_path, data1, monkeypatch):
    scripted = iter([0.10, 0.30, 0.20, 0.25, 0.9, 0.9])

    def fake_eval(*args, **kwargs):
        mrr = next(scripted)
        return {"mrr": mrr, "hits@1": 0.0, "hits@3": 0.0, "hits@10": 0.0, "mean_rank": 1.0}

    monkeypatch.setattr(validation, "evaluate_full", fake_eval)  # what validation during training ranks with
    run = tmp_path / "run"
    overrides = {"model.dim": 8, "training.epochs": 10, "training.eval_every": 1, "training.early_stopping": 2,
                 "checkpoint.keep_versions": 1}
    messages: list[str] = []
    result = train(data1, run, None, overrides, log=messages.append, show_progress=False)
    assert result.epochs_done == 4  # best at epoch 2; epochs 3 and 4 did not beat it
    evals = json.loads((run / "evals.json").read_text())
    assert evals["early_stopped"] and evals["best"]["epoch"] == 2
    best_version = evals["best"]["version"]
    assert best_version in list_versions(run)  # kept although keep_versions is 1
    assert any("early stopping" in m for m in messages)
    again: list[str] = []
    train(data1, run, None, overrides, log=again.append, show_progress=False)
    assert any("nothing to do" in m for m in again)
