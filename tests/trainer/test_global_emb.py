"""``model.global_emb``: one learnt vector per entity type added to every row before scoring.

A model with global vectors G scores exactly as the same model without them on tables
whose rows have G added; its row gradients are those of the shifted tables, and G's
gradient is the sum of the gradients of every row the batch scored (positives and
negatives alike). Evaluation and every export add G, so the exported vectors score as
the model does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bigembed.checkpoint import GLOBAL_EMB_KEY, read_current, read_manifest, read_shard_of
from bigembed.cli.main import cli
from bigembed.config import load_config
from bigembed.evaluation.ranking import evaluate_full, load_checkpoint_model, rank_split
from bigembed.storage.data_manifest import read_data_manifest
from bigembed.trainer import PartitionState
from bigembed.trainer.relations import RelationState
from bigembed.trainer.step import batch_gradients, train_batch
from tests.conftest import write_tiny_graph
from tests.trainer.test_math import _setup as setup_states

DIM = 6


def _setup(overrides):
    config, model, lhs, rhs, relations = setup_states(
        {"training.chunk_size": 3, "training.negatives": 4, **overrides}, lhs_rows=9, rhs_rows=8, dim=DIM)
    G = 0.5 * torch.randn(1, DIM, generator=torch.Generator().manual_seed(7))
    with_g = RelationState(relations.specs, relations.params, relations.adagrad, G.clone(), torch.zeros_like(G))
    return config, model, lhs, rhs, relations, with_g, G


def _grads(config, model, lhs, rhs, relations, fused):
    cfg = config.training.__class__(**{**config.training.__dict__, "fused_step": fused})
    lhs_idx, rhs_idx = torch.tensor([0, 2, 4, 6, 1, 8, 3]), torch.tensor([5, 4, 3, 2, 1, 0, 7])
    b, grads = batch_gradients(model, lhs, rhs, relations, 0, lhs_idx, rhs_idx, None, cfg,
                               torch.Generator().manual_seed(5))
    rows = [b.L, b.R] + [s.rows for _, n in b.sides for s in n.sources]
    return b, [grads[id(t)] for t in rows], grads.get(id(b.globals)) if b.globals is not None else None


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("settings", [
    {"model.operator": "complex_diagonal", "model.loss": "softmax"},
    {"model.operator": "none", "model.loss": "ranking", "model.margin": 2.0},
    {"model.operator": "diagonal", "model.loss": "logistic", "model.comparator": "cos"},
    {"model.operator": "translation", "model.loss": "softmax", "model.comparator": "l2"},
])
def test_global_vectors_score_as_shifted_rows_and_get_the_sum_of_the_row_gradients(settings, fused):
    config, model, lhs, rhs, plain, with_g, G = _setup(settings)
    b, row_grads, g_grad = _grads(config, model, lhs, rhs, with_g, fused)
    shifted = [PartitionState(s.emb + G[0], s.adagrad) for s in (lhs, rhs)]
    b0, row_grads0, none = _grads(config, model, *shifted, plain, fused)
    assert none is None and g_grad is not None
    assert float(b.loss.detach()) == pytest.approx(float(b0.loss.detach()), rel=1e-5)
    for g, g0 in zip(row_grads, row_grads0, strict=True):
        assert torch.allclose(g, g0, atol=1e-5, rtol=1e-4)
    total = sum(g.reshape(-1, DIM).sum(0) for g in row_grads)
    assert torch.allclose(g_grad[0], total, atol=1e-4, rtol=1e-4)
    assert float(g_grad.abs().sum()) > 0


def test_the_fused_step_and_autograd_agree_with_global_vectors():
    config, model, lhs, rhs, _, with_g, _ = _setup({"model.operator": "complex_diagonal", "model.loss": "softmax",
                                                    "model.regularizer": "n3", "model.regularization": 0.05})
    b_f, rows_f, g_f = _grads(config, model, lhs, rhs, with_g, True)
    b_a, rows_a, g_a = _grads(config, model, lhs, rhs, with_g, False)
    assert float(b_f.loss.detach()) == pytest.approx(float(b_a.loss.detach()), rel=1e-5)
    for f, a in zip(rows_f, rows_a, strict=True):
        assert torch.allclose(f, a, atol=1e-5, rtol=1e-4)
    assert torch.allclose(g_f, g_a, atol=1e-5, rtol=1e-4)


def test_a_training_step_moves_the_global_vectors_with_their_own_adagrad():
    config, model, lhs, rhs, _, with_g, _ = _setup({"model.operator": "diagonal", "model.loss": "softmax"})
    before = with_g.globals.clone()
    train_batch(model, lhs, rhs, with_g, 0, torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), None,
                config.training, torch.Generator().manual_seed(1))
    assert not torch.equal(with_g.globals, before)
    assert float(with_g.globals_adagrad.sum()) > 0
    # Adagrad's first step moves each coordinate by about the learning rate
    step = (with_g.globals - before).abs()
    assert float(step.max()) <= config.training.relation_lr * 1.001


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("global")
    write_tiny_graph(root / "train.tsv", seed=3, edges=400)
    write_tiny_graph(root / "test.tsv", seed=4, edges=40)
    for args in (["import", root / "train.tsv", "--split", f"test={root / 'test.tsv'}", "-o", root / "data", "-p", "2",
                  "--no-progress"],
                 ["train", root / "data", "-o", root / "run", "--dim", "8", "--epochs", "2", "--no-progress",
                  "--set", "model.global_emb=true"]):
        r = CliRunner().invoke(cli, [str(a) for a in args])
        assert r.exit_code == 0, r.output
    return root / "data", root / "run"


def test_a_trained_run_stores_its_global_vector_and_exports_the_rows_with_it_added(trained, tmp_path):
    _, run = trained
    manifest = read_manifest(run, read_current(run))
    g = read_shard_of(run, manifest, GLOBAL_EMB_KEY)
    assert g.shape == (1, 8) and float(np.abs(g).sum()) > 0
    stored = [read_shard_of(run, manifest, f"emb/node/{p}") for p in range(2)]
    out = tmp_path / "npy"
    r = CliRunner().invoke(cli, ["export", str(run), "-o", str(out), "--format", "npy", "--no-progress"])
    assert r.exit_code == 0, r.output
    exported = np.load(out / "embeddings.npy")
    assert np.allclose(exported, np.concatenate(stored) + g[0], atol=1e-6)
    assert json.loads((out / "relations.json").read_text())["relations"]  # still described


def test_evaluation_ranks_with_the_global_vector_as_the_exported_rows_do(trained):
    """The filtered metrics of the run equal those of its shifted rows under a model without
    global vectors (what a user of the export computes), and differ from the bare rows'."""
    data_dir, run = trained
    data = read_data_manifest(data_dir)
    manifest = read_manifest(run, read_current(run))
    config = load_config(overrides={"model.dim": 8, "model.global_emb": True})
    ours = evaluate_full(run, manifest, data, config, "test")
    g = torch.from_numpy(read_shard_of(run, manifest, GLOBAL_EMB_KEY))
    model, relations = load_checkpoint_model(run, manifest, data, config)

    def rows(p: int, shift: bool) -> torch.Tensor:
        t = torch.from_numpy(read_shard_of(run, manifest, f"emb/node/{p}")).float()
        return t + g[0] if shift else t

    shifted = rank_split(data, "test", lambda p: rows(p, True), model, relations, True, 8)
    bare = rank_split(data, "test", lambda p: rows(p, False), model, relations, True, 8)
    assert ours["mrr"] == pytest.approx(shifted["mrr"], abs=1e-9)
    assert ours["mrr"] != pytest.approx(bare["mrr"], abs=1e-6)


def test_global_emb_cannot_be_turned_on_or_off_in_an_existing_run(trained, tmp_path):
    data_dir, run = trained
    r = CliRunner().invoke(cli, ["train", str(data_dir), "-o", str(run), "--epochs", "3", "--no-progress",
                                 "--set", "model.global_emb=false"])
    assert r.exit_code != 0
    assert "model.global_emb" in r.output and "start a new RUN" in r.output
