"""The fused training step gives autograd's loss and gradients, and trains the same way."""

import pytest
import torch

from bigembed.config import load_config
from bigembed.trainer import Model, PartitionState
from bigembed.trainer.fused import fused_supported
from bigembed.trainer.model import LOSSES, OPERATORS, LogisticLoss, RankingLoss, SoftmaxLoss
from bigembed.trainer.step import batch_gradients, train_batch
from tests.conftest import PBG_STYLE
from tests.trainer.test_math import _setup as setup_states

INF = float("-inf")


def _setup(overrides, relations=("r",)):
    """test_math's states, a little larger (9 and 8 rows of dim 6) for chunks of 3."""
    return setup_states(overrides, relations, lhs_rows=9, rhs_rows=8, dim=6)


def _both(config, model, lhs, rhs, relations, lhs_idx, rhs_idx, weights, extras=None, rels=None, relation=0,
          pools=None):
    """(fused, autograd): each the loss and the gradients of L, R, every sampled source, params."""
    out = []
    for fused in (True, False):
        cfg = config.training.__class__(**{**config.training.__dict__, "fused_step": fused})
        b, grads = batch_gradients(model, lhs, rhs, relations, relation, lhs_idx, rhs_idx, weights, cfg,
                                   torch.Generator().manual_seed(5), extras=extras, rels=rels, pools=pools)
        leaves = [b.L, b.R] + [s.rows for _, n in b.sides for s in n.sources] + [b.params]
        zero = torch.zeros(())
        out.append((float(b.loss.detach()), [None if t is None else grads.get(id(t), zero) for t in leaves],
                    [s.idx for _, n in b.sides for s in n.sources]))
    return out


def _assert_same(fused, reference):
    (loss_f, grads_f, idx_f), (loss_a, grads_a, idx_a) = fused, reference
    assert all(torch.equal(a, b) for a, b in zip(idx_f, idx_a, strict=True))  # the same negatives drawn
    assert loss_f == pytest.approx(loss_a, rel=1e-5, abs=1e-5)
    assert len(grads_f) == len(grads_a)
    for i, (gf, ga) in enumerate(zip(grads_f, grads_a, strict=True)):
        assert (gf is None) == (ga is None), i
        if gf is not None:
            assert torch.allclose(gf.expand_as(ga), ga, atol=1e-5, rtol=1e-4), (i, gf, ga)
    assert any(g is not None and bool(g.abs().sum() > 0) for g in grads_f)


@pytest.mark.parametrize("comparator", ["dot", "cos"])
@pytest.mark.parametrize("operator", sorted(OPERATORS))
@pytest.mark.parametrize("loss", LOSSES)
def test_fused_gradients_equal_autograd_for_every_operator_and_loss(comparator, operator, loss):
    """Both sides, in-batch + sampled negatives, a remainder chunk (7 edges in chunks of 3),
    float edge weights: loss and every gradient as autograd computes them."""
    config, model, lhs, rhs, relations = _setup({
        "model.operator": operator, "model.comparator": comparator, "model.loss": loss, "model.margin": 0.5,
        "training.chunk_size": 3, "training.negatives": 4})
    lhs_idx, rhs_idx = torch.tensor([0, 2, 4, 6, 1, 8, 3]), torch.tensor([5, 4, 3, 2, 1, 0, 7])
    weights = torch.tensor([1.0, 0.5, 2.0, 1.5, 0.25, 1.0, 3.0])
    _assert_same(*_both(config, model, lhs, rhs, relations, lhs_idx, rhs_idx, weights))


@pytest.mark.parametrize("settings", [
    {"training.negative_sides": "rhs"},
    {"training.negative_sides": "lhs"},
    {"training.batch_negatives": False},
    {"training.negatives": 0},
    {"training.chunk_size": 1},
    {"model.regularizer": "n3", "model.regularization": 0.05, "model.operator": "complex_diagonal"},
    {"model.regularizer": "l2", "model.regularization": 0.05},
    {"training.degree_fraction": 0.5},
])
@pytest.mark.parametrize("operator", ["none", "diagonal"])  # no autograd at all / through the operator
def test_fused_gradients_equal_autograd_for_each_setting(settings, operator):
    config, model, lhs, rhs, relations = _setup({
        "model.operator": operator, "model.loss": "softmax", "training.chunk_size": 3,
        "training.negatives": 4, **settings})
    lhs_idx, rhs_idx = torch.tensor([0, 2, 4, 6, 1, 8, 3]), torch.tensor([5, 4, 3, 2, 1, 0, 7])
    pools = (lhs_idx, rhs_idx) if settings.get("training.degree_fraction") else None
    _assert_same(*_both(config, model, lhs, rhs, relations, lhs_idx, rhs_idx, None, pools=pools))


@pytest.mark.parametrize("operator", ["none", "translation"])
def test_fused_gradients_reach_every_source_partition(operator):
    """Negatives from the bucket's two partitions and a third resident one: each source's rows
    get autograd's gradient (the split of the concatenated candidates)."""
    config, model, lhs, rhs, relations = _setup({
        "model.operator": operator, "model.loss": "ranking", "model.margin": 2.0,
        "training.chunk_size": 2, "training.negatives": 9})
    third = PartitionState(torch.randn(5, 6, generator=torch.Generator().manual_seed(9)), torch.zeros(5))
    lhs_idx, rhs_idx = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7])
    fused, reference = _both(config, model, lhs, rhs, relations, lhs_idx, rhs_idx, None, extras=[third])
    assert len(fused[2]) == 6  # three sources for each side
    _assert_same(fused, reference)


def test_fused_gradients_equal_autograd_for_a_mixed_relation_batch():
    """Reciprocal ComplEx mixes relations in a batch: each edge uses its own relation's row."""
    config, model, lhs, rhs, relations = _setup({
        "model.operator": "complex_diagonal", "model.loss": "softmax", "model.reciprocal": True,
        "training.chunk_size": 3, "training.negatives": 4}, relations=("a", "b", "c"))
    lhs_idx, rhs_idx = torch.tensor([0, 1, 2, 3, 4]), torch.tensor([5, 4, 3, 2, 1])
    rels = torch.tensor([0, 2, 1, 0, 2])
    _assert_same(*_both(config, model, lhs, rhs, relations, lhs_idx, rhs_idx, None, rels=rels))


def test_the_fused_step_covers_sampled_dot_and_cos_only():
    for comparator, all_negatives, expected in [("dot", False, True), ("cos", False, True),
                                                ("l2", False, False), ("squared_l2", False, False),
                                                ("dot", True, False)]:
        config = load_config(overrides={**PBG_STYLE, "model.comparator": comparator,
                                        "training.all_negatives": all_negatives})
        model = Model.from_config(config, ["r"])
        assert fused_supported(model, model.specs[0]) is expected


@pytest.mark.parametrize("loss", [RankingLoss(0.4), LogisticLoss(), SoftmaxLoss()])
def test_loss_gradients_match_autograd_and_ignore_masked_negatives(loss):
    """``with_grads`` over two blocks equals autograd of the loss on their concatenation; a
    ``-inf`` negative gets no gradient and does not count."""
    gen = torch.Generator().manual_seed(0)
    pos = torch.randn(2, 3, generator=gen, requires_grad=True)
    a = torch.randn(2, 3, 3, generator=gen)
    a.diagonal(dim1=1, dim2=2).fill_(INF)
    a.requires_grad_()
    b = torch.randn(2, 3, 4, generator=gen, requires_grad=True)
    weight = torch.tensor([[1.0, 0.5, 2.0], [0.0, 1.0, 3.0]])
    total, dpos, (da, db) = loss.with_grads(pos.detach(), [a.detach(), b.detach()], weight, 1)
    expected = (loss(pos, torch.cat([a, b], -1)) * weight).sum()
    gp, ga, gb = torch.autograd.grad(expected, [pos, a, b])
    assert float(total) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert torch.allclose(dpos, gp, atol=1e-6) and torch.allclose(db, gb, atol=1e-6)
    assert torch.allclose(da, ga, atol=1e-6)
    assert torch.all(da.diagonal(dim1=1, dim2=2) == 0)


def test_fused_and_autograd_training_end_at_the_same_embeddings():
    """Twenty steps each way from the same start: the tables agree to rounding."""
    ends = []
    for fused in (True, False):
        config, model, lhs, rhs, relations = _setup({
            "model.operator": "diagonal", "model.loss": "ranking", "training.chunk_size": 3,
            "training.negatives": 4, "training.fused_step": fused})
        gen = torch.Generator().manual_seed(1)
        for _ in range(20):
            lhs_idx, rhs_idx = torch.randint(9, (7,), generator=gen), torch.randint(8, (7,), generator=gen)
            train_batch(model, lhs, rhs, relations, 0, lhs_idx, rhs_idx, None, config.training, gen)
        ends.append((lhs.emb, rhs.emb, lhs.adagrad, relations.params))
    start = _setup({})[2].emb
    assert not torch.allclose(ends[0][0], start)
    for f, a in zip(*ends, strict=True):
        assert torch.allclose(f, a, atol=1e-4)


def test_the_kernels_are_compiled_and_agree_with_their_python_source():
    """TorchScript compiled every kernel (else training silently runs the slower Python), and
    the compiled scoring gives the Python function's loss and gradients."""
    from bigembed.trainer import kernels

    assert kernels.SCRIPTED
    for fn in (kernels.fused_score_gradients, kernels.fused_loss_grads, kernels.fused_row_adagrad,
               kernels.fused_clip_rows_):
        assert isinstance(fn, torch.jit.ScriptFunction)
    gen = torch.Generator().manual_seed(4)
    X, Y, w = torch.randn(2, 7, 5, generator=gen), torch.randn(2, 3, 4, 5, generator=gen), torch.rand(7, generator=gen)
    for kind in (kernels.LOSS_RANKING, kernels.LOSS_LOGISTIC, kernels.LOSS_SOFTMAX):
        compiled = kernels.fused_score_gradients(kind, 0.5, X, Y, True, True, w, 3, True)
        plain = kernels.score_gradients(kind, 0.5, X, Y, True, True, w, 3, True)
        for a, b in zip(compiled, plain, strict=True):
            assert torch.allclose(a, b, atol=1e-6)
        assert float(compiled[1].abs().sum()) > 0
    table, state = torch.randn(9, 5, generator=gen), torch.rand(9, generator=gen)
    indices = [torch.tensor([0, 1, 2, 0]), torch.tensor([3, 2, 4])]
    grads = [torch.randn(4, 5, generator=gen), torch.randn(3, 5, generator=gen)]
    t1, s1, t2, s2 = table.clone(), state.clone(), table.clone(), state.clone()
    kernels.fused_row_adagrad(t1, s1, torch.empty(9, dtype=torch.int32), indices, grads, 0.2, 0.0)
    kernels.row_adagrad(t2, s2, torch.empty(9, dtype=torch.int32), indices, grads, 0.2, 0.0)
    assert torch.allclose(t1, t2, atol=1e-6) and torch.allclose(s1, s2) and not torch.equal(t1, table)


@pytest.mark.parametrize("kind", [0, 1, 2])  # kernels.LOSS_RANKING, LOSS_LOGISTIC, LOSS_SOFTMAX
def test_the_wide_kernel_gives_the_general_kernels_loss_and_gradients(kind):
    """Both sides corrupted, in-batch and sampled negatives, full chunks: the wide layout
    ([R; Nr] per chunk, then Q, then Ml) scores and differentiates as ``score_gradients``."""
    from bigembed.trainer import kernels

    gen = torch.Generator().manual_seed(11)
    n, c, U, d = 3, 4, 5, 6
    L, R = torch.randn(n * c, d, generator=gen), torch.randn(n * c, d, generator=gen)
    Nr, Ml = torch.randn(n, U, d, generator=gen), torch.randn(n, U, d, generator=gen)
    w = torch.rand(n * c, generator=gen) + 0.5
    total, dX, dY = kernels.fused_score_gradients(kind, 0.7, torch.stack([L, R]), torch.stack([Nr, Ml]), True, True,
                                                  w, c, True)
    W = torch.cat([torch.cat([R.view(n, c, d), Nr], 1).view(-1, d), L, Ml.view(-1, d)])
    for fn in (kernels.fused_wide_score_gradients, kernels.wide_score_gradients):
        wide_total, dW = fn(kind, 0.7, W.clone(), w, c, U)
        dZ = dW[: n * (c + U)].view(n, c + U, d)
        assert float(wide_total) == pytest.approx(float(total), rel=1e-5)
        assert torch.allclose(dZ[:, :c].reshape(-1, d), dX[1], atol=1e-5)  # rhs rows
        assert torch.allclose(dZ[:, c:], dY[0], atol=1e-5)  # the rhs side's sampled rows
        assert torch.allclose(dW[n * (c + U) : n * (c + U) + n * c], dX[0], atol=1e-5)  # queries
        assert torch.allclose(dW[n * (c + U) + n * c :].view(n, U, d), dY[1], atol=1e-5)  # the lhs side's
    assert isinstance(kernels.fused_wide_score_gradients, torch.jit.ScriptFunction)


@pytest.mark.parametrize("loss", LOSSES)
def test_the_wide_step_trains_as_autograd_does(loss):
    """Six edges in chunks of three (full chunks, both sides, dot): the fused step takes the wide
    layout, hands its gradients over as row pieces, and one step of it moves every table as
    the autograd step does; a seventh edge (a remainder chunk) takes the general layout."""
    ends = []
    for fused in (True, False):
        config, model, lhs, rhs, relations = _setup({
            "model.operator": "none", "model.loss": loss, "model.margin": 0.5, "training.chunk_size": 3,
            "training.negatives": 4, "training.fused_step": fused})
        lhs_idx, rhs_idx = torch.tensor([0, 2, 4, 6, 1, 2]), torch.tensor([5, 4, 3, 2, 1, 5])
        b, _ = batch_gradients(model, lhs, rhs, relations, 0, lhs_idx, rhs_idx, None, config.training,
                               torch.Generator().manual_seed(5))
        assert (b.pieces is not None) == fused
        if fused:
            b7, _ = batch_gradients(model, lhs, rhs, relations, 0, torch.arange(7), torch.arange(7), None,
                                    config.training, torch.Generator().manual_seed(5))
            assert b7.pieces is None
        start = lhs.emb.clone(), rhs.emb.clone()
        train_batch(model, lhs, rhs, relations, 0, lhs_idx, rhs_idx, None, config.training,
                    torch.Generator().manual_seed(5))
        assert not torch.equal(lhs.emb, start[0]) and not torch.equal(rhs.emb, start[1])
        ends.append((lhs.emb, rhs.emb, lhs.adagrad, rhs.adagrad))
    for f, a in zip(*ends, strict=True):
        assert torch.allclose(f, a, atol=1e-5)
