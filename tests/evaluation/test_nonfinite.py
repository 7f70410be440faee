"""A broken model never scores well: NaN or infinite scores rank the true answer last, a NaN
candidate beats it, and the metrics say how many scores were not finite."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bigembed.checkpoint import Position, VersionWriter, emb_key, read_current, read_manifest
from bigembed.checkpoint.run import read_run_config
from bigembed.cli.main import cli
from bigembed.config import build_config, flatten, load_config
from bigembed.evaluation import evaluate_full, evaluate_sampled
from bigembed.evaluation.ranking import partition_offsets, rank_split, read_split
from bigembed.evaluation.report import format_metrics
from bigembed.storage.data_manifest import read_data_manifest
from bigembed.trainer import Model, RelationState
from tests.conftest import PBG_STYLE, write_tiny_graph

NAN = float("nan")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nan")
    write_tiny_graph(root / "train.tsv", seed=1, edges=400)
    write_tiny_graph(root / "test.tsv", seed=2, edges=50)
    for args in (["import", root / "train.tsv", "--split", f"test={root / 'test.tsv'}", "-o", root / "data",
                  "-p", "3", "--no-progress"],
                 ["train", root / "data", "-o", root / "run", "--dim", "8", "--epochs", "1", "--no-progress"]):
        r = CliRunner().invoke(cli, [str(a) for a in args])
        assert r.exit_code == 0, r.output
    return root


def _nan_run(trained: Path, dest: Path) -> Path:
    """A copy of the trained RUN whose newest version has every embedding NaN."""
    run = dest / "run"
    shutil.copytree(trained / "run", run)
    base = read_manifest(run, read_current(run))
    dm = read_data_manifest(trained / "data")
    writer = VersionWriter(run, base, base.version + 1)
    for p in range(dm.num_partitions):
        writer.write(emb_key("node", p), np.full((dm.entity_counts[p], 8), NAN, np.float32))
    writer.commit(Position(base.position.epoch + 1, 0), {})
    return run


def _open(run: Path, data: Path):
    config = build_config(flatten(read_run_config(run)["config"]))
    return read_manifest(run, read_current(run)), read_data_manifest(data), config


def test_a_nan_positive_ranks_last_and_a_nan_negative_beats_its_positive():
    from bigembed.evaluation import ranks_against
    from bigembed.evaluation.metrics import count_nonfinite

    pos = torch.tensor([NAN, float("inf"), 1.0, 1.0, float("-inf")])
    neg = torch.tensor([[0.0, 2.0, NAN], [0.0, 1.0, 2.0], [0.0, NAN, 1.0], [0.0, 0.5, 2.0], [0.0, 0.0, 0.0]])
    ranks, auc = ranks_against(pos, neg)
    assert ranks.tolist() == [4.0, 4.0, 2.5, 2.0, 4.0]  # NaN and inf positives last; a NaN negative is above
    assert auc.tolist() == pytest.approx([0.0, 0.0, 0.5, 2 / 3, 0.0])
    assert count_nonfinite(pos, neg) == 3 + 2


def test_the_accumulator_sums_nonfinite_counts_over_directions():
    from bigembed.evaluation import RankAccumulator
    from bigembed.evaluation.metrics import combine_directions

    a, b = RankAccumulator(), RankAccumulator()
    a.add(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 0.5]), 3)
    b.add(torch.tensor([4.0, 4.0]), torch.tensor([0.0, 0.0]), 4)
    both = combine_directions(a.summary(), b.summary())
    assert both["nonfinite_scores"] == 7 and both["count"] == 2
    assert both["mean_rank"] == pytest.approx((1.5 + 4.0) / 2)
    merged = RankAccumulator()
    merged.merge(a)
    merged.merge(b)
    assert merged.summary()["nonfinite_scores"] == 7


def test_full_ranking_with_one_nan_row_counts_it_against_every_query(trained):
    """Zero embeddings (every finite score 0: all tie) but one NaN row x, raw protocol: a query
    touching x has a NaN true score and ranks N; any other query has x above it and the rest
    tied, rank 1 + 1 + (N - 2) / 2. Before, the NaN queries ranked 1st."""
    dm = read_data_manifest(trained / "data")
    config = load_config(overrides={**PBG_STYLE, "model.dim": 2})
    model = Model.for_data(config, dm)
    relations = RelationState(model.specs, torch.zeros(0), torch.zeros(0))
    offsets = partition_offsets(dm)
    x = int(offsets[1]) + 2  # a node of partition 1
    N = dm.num_entities

    def load(p: int) -> torch.Tensor:
        emb = torch.zeros(dm.entity_counts[p], 2)
        if p == 1:
            emb[2] = NAN
        return emb

    out = rank_split(dm, "test", load, model, relations, False, 2, filtered=False)
    edges = read_split(dm, "test")
    touches = (edges.lhs == x) | (edges.rhs == x)
    assert touches.any() and not touches.all()
    expected = np.where(touches, N, 1 + 1 + (N - 2) / 2)
    for side in ("rhs", "lhs"):
        assert out[side]["mean_rank"] == pytest.approx(expected.mean())
        assert out[side]["mrr"] == pytest.approx((1 / expected).mean())
    # non-finite: a query anchored at x scores N (its answer and N - 1 candidates), any other 1
    anchored = {"rhs": edges.lhs == x, "lhs": edges.rhs == x}
    for side, at_x in anchored.items():
        assert out[side]["nonfinite_scores"] == int(np.where(at_x, N, 1).sum())
    assert out["nonfinite_scores"] == out["rhs"]["nonfinite_scores"] + out["lhs"]["nonfinite_scores"]


@pytest.mark.parametrize("filtered", [True, False])
def test_an_all_nan_checkpoint_scores_worst_in_full_ranking(trained, tmp_path, filtered):
    run = _nan_run(trained, tmp_path)
    manifest, dm, config = _open(run, trained / "data")
    m = evaluate_full(run, manifest, dm, config, "test", filtered=filtered, per_relation=True)
    N = dm.num_entities
    assert m["hits@1"] == 0 and m["hits@10"] == 0 and m["mrr"] < 1 / 10
    if not filtered:  # each true answer below all N - 1 other nodes
        assert m["mean_rank"] == N and m["mrr"] == pytest.approx(1 / N) and m["auc"] == 0
    assert m["nonfinite_scores"] >= 2 * m["count"]  # at least every true score, in both directions
    for rel in m["relations"].values():
        assert rel["mrr"] < 1 / 10 and rel["nonfinite_scores"] > 0
    text = format_metrics(m)
    assert f"warning: {m['nonfinite_scores']} scores were NaN or infinite" in text


def test_an_all_nan_checkpoint_scores_worst_in_sampled_ranking(trained, tmp_path):
    run = _nan_run(trained, tmp_path)
    manifest, dm, config = _open(run, trained / "data")
    m = evaluate_sampled(run, manifest, dm, config, "test", negatives=20)
    assert m["mean_rank"] == 21 and m["mrr"] == pytest.approx(1 / 21) and m["auc"] == 0
    assert m["nonfinite_scores"] == 2 * m["count"] * (1 + 20)  # each edge and side: its score and 20


def test_eval_of_a_nan_checkpoint_warns_and_a_finite_one_does_not(trained, tmp_path):
    run = _nan_run(trained, tmp_path)
    r = CliRunner().invoke(cli, ["eval", str(run), str(trained / "data"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "scores were NaN or infinite" in r.output and "MRR 1.0000" not in r.output
    r = CliRunner().invoke(cli, ["eval", str(trained / "run"), str(trained / "data"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "NaN" not in r.output
