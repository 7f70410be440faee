"""The trainer's math against direct formulas on tiny tensors."""

import pytest
import torch

from bigembed.config import load_config
from bigembed.trainer import Model, PartitionState, RelationState
from bigembed.trainer.adagrad import EPS, dense_adagrad_, row_adagrad_
from bigembed.trainer.batch import batch_loss, train_batch
from bigembed.trainer.bucket import plan_batches
from bigembed.trainer.model import OPERATORS, DiagonalOperator, RankingLoss, TranslationOperator


def test_row_adagrad_matches_the_formula_with_repeated_rows():
    torch.manual_seed(0)
    table = torch.randn(5, 3)
    state = torch.rand(5)
    index = torch.tensor([1, 3, 1])
    grad = torch.randn(3, 3)
    expected_t, expected_s = table.clone(), state.clone()
    for row in (1, 3):
        g = grad[index == row].sum(0)
        expected_s[row] += (g * g).mean()
        expected_t[row] -= 0.5 * g / (expected_s[row].sqrt() + EPS)
    row_adagrad_(table, state, index, grad, 0.5)
    assert torch.allclose(table, expected_t) and torch.allclose(state, expected_s)


def test_dense_adagrad_matches_the_formula():
    p, s, g = torch.ones(4), torch.zeros(4), torch.tensor([1.0, -2.0, 0.5, 0.0])
    dense_adagrad_(p, s, g, 0.1)
    assert torch.allclose(s, g * g)
    assert torch.allclose(p, 1 - 0.1 * g / (g.abs() + EPS))


def test_operators():
    x, t = torch.randn(2, 4), torch.randn(4)
    assert torch.allclose(TranslationOperator().apply(x, t), x + t)
    assert torch.allclose(DiagonalOperator().apply(x, t), x * t)


def test_ranking_loss_with_mask():
    pos = torch.tensor([1.0, 0.0])
    neg = torch.tensor([[0.5, 2.0], [0.2, -1.0]])
    mask = torch.tensor([[True, False], [False, False]])
    # margin 1: [[masked, 2.0], [1.2, 0.0]]
    assert torch.isclose(RankingLoss(1.0)(pos, neg, mask), torch.tensor(3.2))


@pytest.mark.parametrize("operator", sorted(OPERATORS))
def test_batch_loss_equals_a_direct_double_loop(operator):
    """Every registered operator: chunked, batched scoring equals the per-pair formula."""
    gen = torch.Generator().manual_seed(1)
    lhs = PartitionState(torch.randn(7, 4, generator=gen), torch.zeros(7))
    rhs = PartitionState(torch.randn(6, 4, generator=gen), torch.zeros(6))
    lhs_idx, rhs_idx = torch.tensor([0, 2, 4, 6, 1]), torch.tensor([5, 4, 3, 2, 1])
    model = Model.from_config(load_config(overrides={"model.margin": 0.3, "model.operator": operator}).model)
    params = model.operator.init_params(1, 4)
    if params is not None:
        params = params[0] + torch.randn(4, generator=gen)  # away from the identity
    loss, _, ul, ur = batch_loss(model, lhs, rhs, lhs_idx, rhs_idx, params, chunk_size=2, negatives=3,
                                 generator=torch.Generator().manual_seed(2))

    def op(x):
        return model.operator.apply(x, params)

    expected = 0.0
    chunks = [[0, 1], [2, 3], [4]]
    for c, members in enumerate(chunks):
        for i in members:
            L, R = lhs.emb[lhs_idx[i]], rhs.emb[rhs_idx[i]]
            pos = op(L) @ R
            rhs_cands = [rhs.emb[rhs_idx[j]] for j in members if j != i] + [rhs.emb[k] for k in ur[c]]
            lhs_cands = [lhs.emb[lhs_idx[j]] for j in members if j != i] + [lhs.emb[k] for k in ul[c]]
            for cand in rhs_cands:
                expected += max(0.0, 0.3 - pos + op(L) @ cand)
            for cand in lhs_cands:
                expected += max(0.0, 0.3 - pos + op(cand) @ R)
    assert abs(float(loss.detach()) - float(expected)) < 1e-4


def test_training_steps_lower_the_loss_and_touch_only_batch_rows():
    gen = torch.Generator().manual_seed(0)
    n, d = 40, 8
    state = PartitionState(torch.randn(n, d, generator=gen) * 0.1, torch.zeros(n))
    config = load_config(overrides={"training.negatives": 0, "training.chunk_size": 4}).training
    model = Model.from_config(load_config().model)
    lhs_idx, rhs_idx = torch.arange(0, 8), torch.arange(8, 16)
    before = state.emb.clone()
    losses = [train_batch(model, state, state, RelationState(None, None), 0, lhs_idx, rhs_idx, config,
                          torch.Generator().manual_seed(0)) for _ in range(20)]
    assert losses[-1] < losses[0]
    untouched = torch.arange(16, n)
    assert torch.equal(state.emb[untouched], before[untouched])


def test_plan_batches_covers_every_edge_once_and_groups_relations():
    rel = torch.tensor([0, 1, 2, 1, 0, 0, 2, 1, 1, 0, 2])
    batches = plan_batches(rel, 2, True, torch.Generator().manual_seed(0))
    seen = torch.cat([pos for _, pos in batches]).sort().values
    assert torch.equal(seen, torch.arange(len(rel)))
    for r, pos in batches:
        assert bool((rel[pos] == r).all()) and len(pos) <= 2
