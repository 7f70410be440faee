"""The trainer's math against direct formulas on tiny tensors."""

import math

import pytest
import torch

from bigembed.config import load_config
from bigembed.trainer import Model, PartitionState, RelationState, initial_params
from bigembed.trainer.adagrad import EPS, dense_adagrad_, dense_row_adagrad_, row_adagrad_
from bigembed.trainer.batch import batch_loss, softmax_shift
from bigembed.trainer.bucket import plan_batches
from bigembed.trainer.fused import fused_gradients
from bigembed.trainer.model import (
    COMPARATORS,
    OPERATORS,
    AffineOperator,
    ComplexDiagonalOperator,
    CosComparator,
    DiagonalOperator,
    DotComparator,
    L2Comparator,
    LinearOperator,
    LogisticLoss,
    RankingLoss,
    RotationOperator,
    SoftmaxLoss,
    TranslationOperator,
)
from bigembed.trainer.negatives import sample_negatives
from bigembed.trainer.step import train_batch
from tests.conftest import PBG_STYLE

INF = float("-inf")


def _row_adagrad_reference(table: torch.Tensor, state: torch.Tensor, index: torch.Tensor, grad: torch.Tensor,
                           lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise Adagrad written out row by row: a repeated row's gradients summed, then
    its accumulator grows by the mean square and the row steps by lr / sqrt(accumulator)."""
    t, s = table.clone(), state.clone()
    for row in index.unique().tolist():
        g = grad[index == row].sum(0)
        s[row] += (g * g).mean()
        t[row] -= lr * g / (s[row].sqrt() + EPS)
    return t, s


def test_row_adagrad_matches_the_formula_with_repeated_rows():
    torch.manual_seed(0)
    table = torch.randn(5, 3)
    state = torch.rand(5)
    index = torch.tensor([1, 3, 1])
    grad = torch.randn(3, 3)
    before = table.clone()
    expected_t, expected_s = _row_adagrad_reference(table, state, index, grad, 0.5)
    row_adagrad_(table, state, index, grad, 0.5)
    assert torch.allclose(table, expected_t) and torch.allclose(state, expected_s)
    moved = (table != before).any(1)
    assert moved.tolist() == [False, True, False, True, False]  # only the rows named


def test_row_adagrad_in_pieces_with_rows_repeated_within_and_across_pieces():
    """Most rows come once, some twice or three times in one piece or across pieces (summed
    first): every row gets the formula's update, and the caller's gradients are untouched."""
    gen = torch.Generator().manual_seed(3)
    table, state = torch.randn(50, 4, generator=gen), torch.rand(50, generator=gen)
    indices = [torch.tensor([0, 1, 2, 3, 4, 5, 0]), torch.tensor([6, 7, 8, 9, 1, 10]), torch.tensor([11, 12, 1, 13, 6])]
    grads = [torch.randn(i.shape[0], 4, generator=gen) for i in indices]
    originals = [g.clone() for g in grads]
    expected_t, expected_s = _row_adagrad_reference(table, state, torch.cat(indices), torch.cat(grads), 0.3)
    row_adagrad_(table, state, indices, grads, 0.3)
    assert torch.allclose(table, expected_t, atol=1e-6) and torch.allclose(state, expected_s, atol=1e-6)
    assert all(torch.equal(g, o) for g, o in zip(grads, originals, strict=True))


@pytest.mark.parametrize("per_coordinate", [False, True])
def test_row_adagrad_that_may_consume_its_gradient_gives_the_same_step(per_coordinate):
    """With ``consume`` the gradient buffer is scratch (repeats are folded into it): the step
    is the one without it, and an expanded gradient (rows sharing memory) is still read right."""
    gen = torch.Generator().manual_seed(6)
    table, state = torch.randn(30, 4, generator=gen), torch.rand((30, 4) if per_coordinate else (30,), generator=gen)
    index = torch.tensor([5, 2, 5, 9, 2, 5, 11])
    grad = torch.randn(7, 4, generator=gen)
    t1, s1, t2, s2 = table.clone(), state.clone(), table.clone(), state.clone()
    row_adagrad_(t1, s1, index, grad.clone(), 0.4)
    scratch = grad.clone()
    row_adagrad_(t2, s2, index, scratch, 0.4, consume=True)
    assert torch.equal(t1, t2) and torch.equal(s1, s2) and not torch.equal(t1, table)
    assert not torch.equal(scratch, grad)  # it was used as scratch
    if not per_coordinate:
        expected_t, expected_s = _row_adagrad_reference(table, state, index, grad, 0.4)
        assert torch.allclose(t1, expected_t, atol=1e-6) and torch.allclose(s1, expected_s, atol=1e-6)
    same = torch.randn(1, 4, generator=gen)
    t3, s3, t4, s4 = table.clone(), state.clone(), table.clone(), state.clone()
    row_adagrad_(t3, s3, index, same.expand(7, 4), 0.4, consume=True)
    row_adagrad_(t4, s4, index, same.repeat(7, 1), 0.4)
    assert torch.equal(t3, t4) and torch.equal(s3, s4)


def test_row_adagrad_slots_hold_stale_numbers_and_grow_with_the_table():
    """The per-thread row slots are never cleared between calls: leftovers from a larger table,
    or a slot filled with numbers that look like positions, change nothing; a larger table
    grows them."""
    from bigembed.trainer.adagrad import row_slots

    gen = torch.Generator().manual_seed(5)
    big = torch.randn(200, 4, generator=gen)
    row_adagrad_(big, torch.zeros(200), torch.randint(200, (300,), generator=gen), torch.randn(300, 4), 0.1)
    row_slots(200).fill_(1)  # every slot claims position 1
    table, state = torch.randn(20, 4, generator=gen), torch.rand(20, generator=gen)
    index = torch.tensor([7, 1, 7, 7, 2, 1, 19])
    grad = torch.randn(7, 4, generator=gen)
    expected_t, expected_s = _row_adagrad_reference(table, state, index, grad, 0.4)
    row_adagrad_(table, state, index, grad, 0.4)
    assert torch.allclose(table, expected_t, atol=1e-6) and torch.allclose(state, expected_s, atol=1e-6)
    assert row_slots(500).shape[0] >= 500


def test_gradient_pieces_that_follow_each_other_in_memory_are_read_as_one():
    from bigembed.trainer.adagrad import merge_adjacent

    buffer = torch.randn(10, 3)
    merged = merge_adjacent([buffer[:4], buffer[4:6], buffer[6:].view(2, 2, 3).view(4, 3)])
    assert len(merged) == 1 and merged[0].data_ptr() == buffer.data_ptr() and torch.equal(merged[0], buffer)
    apart = merge_adjacent([buffer[:4], buffer[6:]])  # a gap between them: left as they are
    assert [t.shape[0] for t in apart] == [4, 4]
    other = torch.randn(4, 3)
    assert len(merge_adjacent([buffer[:4], other])) == 2


def test_row_adagrad_with_every_row_distinct_and_with_max_norm():
    gen = torch.Generator().manual_seed(8)
    table, state = torch.randn(30, 3, generator=gen), torch.rand(30, generator=gen)
    index, grad = torch.randperm(30, generator=gen)[:12], torch.randn(12, 3, generator=gen) * 5
    expected_t, expected_s = _row_adagrad_reference(table, state, index, grad, 0.7)
    row_adagrad_(table, state, [index[:5], index[5:]], [grad[:5], grad[5:]], 0.7)
    assert torch.allclose(table, expected_t, atol=1e-6) and torch.allclose(state, expected_s, atol=1e-6)
    index2 = torch.tensor([3, 3, 4])
    row_adagrad_(table, state, index2, torch.ones(3, 3) * 100, 5.0, max_norm=1.0)
    norms = torch.linalg.vector_norm(table[index2.unique()], dim=1)
    assert torch.all(norms <= 1.0 + 1e-5)


def test_dense_row_adagrad_equals_the_sparse_one_on_every_row():
    torch.manual_seed(1)
    table, state, grad = torch.randn(4, 3), torch.rand(4), torch.randn(4, 3)
    t2, s2 = table.clone(), state.clone()
    dense_row_adagrad_(table, state, grad, 0.3)
    row_adagrad_(t2, s2, torch.arange(4), grad, 0.3)
    assert torch.allclose(table, t2) and torch.allclose(state, s2)


def test_max_norm_rescales_only_long_updated_rows():
    table = torch.tensor([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0]])
    row_adagrad_(table, torch.zeros(3), torch.tensor([0, 1]), torch.zeros(2, 2), 0.1, max_norm=1.0)
    assert torch.allclose(table[0], torch.tensor([0.6, 0.8]))
    assert torch.allclose(table[1], torch.tensor([0.3, 0.4]))  # short: unchanged
    assert torch.allclose(table[2], torch.tensor([6.0, 8.0]))  # not updated: unchanged


def test_dense_adagrad_matches_the_formula():
    p, s, g = torch.ones(4), torch.zeros(4), torch.tensor([1.0, -2.0, 0.5, 0.0])
    dense_adagrad_(p, s, g, 0.1)
    assert torch.allclose(s, g * g)
    assert torch.allclose(p, 1 - 0.1 * g / (g.abs() + EPS))


def _complex(x):
    h = x.shape[-1] // 2
    return torch.complex(x[..., :h].double(), x[..., h:].double())


def test_operators_match_their_formulas():
    torch.manual_seed(2)
    x, t = torch.randn(3, 4), torch.randn(4)
    assert torch.allclose(TranslationOperator().apply(x, t), x + t)
    assert torch.allclose(DiagonalOperator().apply(x, t), x * t)
    A = torch.randn(4, 4)
    for i in range(3):
        assert torch.allclose(LinearOperator().apply(x, A)[i], A @ x[i], atol=1e-6)
    Ab = torch.randn(5, 4)
    for i in range(3):
        assert torch.allclose(AffineOperator().apply(x, Ab)[i], Ab[:4] @ x[i] + Ab[4], atol=1e-6)
    z, r = _complex(x), _complex(t)
    out = _complex(ComplexDiagonalOperator().apply(x, t))
    assert torch.allclose(out, z * r, atol=1e-6)
    theta = torch.randn(2)
    rot = _complex(RotationOperator().apply(x, theta))
    assert torch.allclose(rot, z * torch.exp(1j * theta.double()), atol=1e-6)
    assert torch.allclose(rot.abs(), z.abs(), atol=1e-6)  # rotations keep moduli


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_every_operator_starts_as_the_identity_or_a_no_op(name):
    op = OPERATORS[name]()
    x = torch.randn(3, 6)
    assert torch.allclose(op.apply(x, op.init_param(6)), x)


def test_complex_diagonal_with_dot_is_complex():
    """Re(sum_k h_k r_k conj(t_k)), Trouillon et al. 2016."""
    torch.manual_seed(3)
    h, r, t = torch.randn(6), torch.randn(6), torch.randn(6)
    score = DotComparator().positive(ComplexDiagonalOperator().apply(h, r), t)
    expected = (_complex(h) * _complex(r) * _complex(t).conj()).sum().real
    assert abs(float(score) - float(expected)) < 1e-5


def test_comparators_match_their_formulas():
    torch.manual_seed(4)
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    direct = {
        "dot": lambda u, v: u @ v,
        "cos": lambda u, v: torch.nn.functional.cosine_similarity(u, v, dim=0),
        "l2": lambda u, v: -torch.dist(u, v),
        "squared_l2": lambda u, v: -torch.dist(u, v) ** 2,
    }
    assert set(direct) == set(COMPARATORS)
    for name, formula in direct.items():
        comp = COMPARATORS[name]()
        pos = comp.positive(a, b)
        neg = comp.negative(a, b)
        for i in range(3):
            assert abs(float(pos[i]) - float(formula(a[i], b[i]))) < 1e-5, name
            for j in range(3):
                assert abs(float(neg[i, j]) - float(formula(a[i], b[j]))) < 1e-4, name


def test_l2_gradient_is_finite_at_zero_distance():
    a = torch.ones(1, 3, requires_grad=True)
    L2Comparator().positive(a, torch.ones(1, 3)).sum().backward()
    assert torch.isfinite(a.grad).all()
    assert isinstance(CosComparator().positive(a, a), torch.Tensor)


def test_losses_match_their_formulas_and_ignore_masked_negatives():
    pos = torch.tensor([1.0, 0.0])
    neg = torch.tensor([[INF, 2.0, 0.5], [0.2, -1.0, INF]])
    ranking = RankingLoss(1.0)(pos, neg)
    assert torch.allclose(ranking, torch.tensor([2.0 + 0.5, 1.2 + 0.0]))
    logistic = LogisticLoss()(pos, neg)
    sp = torch.nn.functional.softplus
    expected = torch.stack([sp(-pos[0]) + (sp(neg[0, 1]) + sp(neg[0, 2])) / 2,
                            sp(-pos[1]) + (sp(neg[1, 0]) + sp(neg[1, 1])) / 2])
    assert torch.allclose(logistic, expected)
    softmax = SoftmaxLoss()(pos, neg)
    e = math.exp
    expected = torch.tensor([-math.log(e(1) / (e(1) + e(2) + e(0.5))),
                             -math.log(e(0) / (e(0) + e(0.2) + e(-1)))])
    assert torch.allclose(softmax, expected)


def _setup(overrides, relations=("r",), lhs_rows=7, rhs_rows=6, dim=4, seed=1):
    config = load_config(overrides={**PBG_STYLE, "model.dim": dim, **overrides})
    model = Model.from_config(config, list(relations))
    gen = torch.Generator().manual_seed(seed)
    lhs = PartitionState(torch.randn(lhs_rows, dim, generator=gen), torch.zeros(lhs_rows))
    rhs = PartitionState(torch.randn(rhs_rows, dim, generator=gen), torch.zeros(rhs_rows))
    params = initial_params(model.specs, dim)
    params += 0.3 * torch.randn(params.shape, generator=gen)  # away from the identity
    return config, model, lhs, rhs, RelationState(model.specs, params, torch.zeros_like(params))


LOSS_FORMULAS = {
    "ranking": lambda pos, negs: sum(max(0.0, 0.3 - pos + n) for n in negs),
    "logistic": lambda pos, negs: math.log1p(math.exp(-pos)) + sum(math.log1p(math.exp(n)) for n in negs) / len(negs),
    "softmax": lambda pos, negs: -pos + math.log(math.exp(pos) + sum(math.exp(n) for n in negs)),
}


@pytest.mark.parametrize("where", ["answer", "buffer"])
@pytest.mark.parametrize("operator", sorted(OPERATORS))
@pytest.mark.parametrize("loss", sorted(LOSS_FORMULAS))
def test_batch_loss_equals_a_direct_double_loop(operator, loss, where):
    """Chunked in-batch + sampled negatives on both sides equal the per-pair formula; with
    negative_partitions = buffer a side's sampled negatives also come from the other partition."""
    config, model, lhs, rhs, relations = _setup({
        "model.margin": 0.3, "model.operator": operator, "model.loss": loss, "model.comparator": "dot",
        "training.chunk_size": 2, "training.negatives": 3})
    lhs_idx, rhs_idx = torch.tensor([0, 2, 4, 6, 1]), torch.tensor([5, 4, 3, 2, 1])
    weights = torch.tensor([1.0, 0.5, 2.0, 1.5, 0.25])
    b = batch_loss(model, lhs, rhs, relations, 0, lhs_idx, rhs_idx, weights, config.training,
                   torch.Generator().manual_seed(2), extras=() if where == "buffer" else None)
    (rhs_side, rhs_negs), (lhs_side, lhs_negs) = b.sides
    assert not rhs_side and lhs_side
    ur, ul = rhs_negs.idx, lhs_negs.idx
    # rhs negatives from the lhs partition and vice versa (7 and 6 rows: 2 and 1 of the 3)
    ur_other, ul_other = (None, None) if where == "answer" else (rhs_negs.sources[1].idx, lhs_negs.sources[1].idx)
    if where == "answer":
        assert len(rhs_negs.sources) == len(lhs_negs.sources) == 1 and ur.shape == ul.shape == (3, 3)
    else:
        assert ur_other.shape == (3, 2) and ur.shape == (3, 1) and ul_other.shape == (3, 1) and ul.shape == (3, 2)
        assert int(ur_other.max()) < 7 and int(ul_other.max()) < 6
    p = relations.param(0)

    def op(x):
        return model.specs[0].operator.apply(x, p)

    formula = LOSS_FORMULAS[loss]
    # the sampled-softmax correction: the 3 sampled negatives stand for the 6 (rhs) and 7 (lhs)
    # candidate rows, or all 13 with both partitions as sources; in-batch ones are not shifted
    shift = math.log((6.5 if where == "answer" else 13) / 3) if loss == "softmax" else 0.0
    expected = 0.0
    for c, members in enumerate([[0, 1], [2, 3], [4]]):
        for i in members:
            L, R = lhs.emb[lhs_idx[i]], rhs.emb[rhs_idx[i]]
            pos = float(op(L) @ R)
            rhs_in = [rhs.emb[rhs_idx[j]] for j in members if j != i]
            lhs_in = [lhs.emb[lhs_idx[j]] for j in members if j != i]
            rhs_negs_ = [rhs.emb[k] for k in ur[c]]
            lhs_negs_ = [lhs.emb[k] for k in ul[c]]
            if where == "buffer":
                rhs_negs_ += [lhs.emb[k] for k in ur_other[c]]
                lhs_negs_ += [rhs.emb[k] for k in ul_other[c]]
            expected += float(weights[i]) * formula(
                pos, [float(op(L) @ n) for n in rhs_in] + [float(op(L) @ n) + shift for n in rhs_negs_])
            expected += float(weights[i]) * formula(
                pos, [float(op(n) @ R) for n in lhs_in] + [float(op(n) @ R) + shift for n in lhs_negs_])
    assert abs(float(b.loss.detach()) - expected) < 1e-3 * max(1.0, abs(expected))


@pytest.mark.parametrize("where", ["answer", "buffer"])
@pytest.mark.parametrize("loss", sorted(LOSS_FORMULAS))
@pytest.mark.parametrize("comparator", sorted(COMPARATORS))
def test_all_negatives_scores_against_every_row(loss, comparator, where):
    """Every row of the answer's partition (and with buffer, of the lhs partition too)."""
    config, model, lhs, rhs, relations = _setup({
        "model.margin": 0.3, "model.operator": "diagonal", "model.loss": loss, "model.comparator": comparator,
        "training.all_negatives": True, "training.negative_sides": "rhs"})
    lhs_idx, rhs_idx = torch.tensor([0, 3, 6]), torch.tensor([5, 0, 2])
    b = batch_loss(model, lhs, rhs, relations, 0, lhs_idx, rhs_idx, None, config.training, torch.Generator(),
                   extras=() if where == "buffer" else None)
    comp = COMPARATORS[comparator]()
    p = relations.param(0)
    expected = 0.0
    for i in range(3):
        q = (lhs.emb[lhs_idx[i]] * p).unsqueeze(0)
        pos = float(comp.positive(q, rhs.emb[rhs_idx[i]].unsqueeze(0))[0])
        negs = [float(comp.positive(q, rhs.emb[k].unsqueeze(0))[0]) for k in range(6) if k != rhs_idx[i]]
        if where == "buffer":
            negs += [float(comp.positive(q, lhs.emb[k].unsqueeze(0))[0]) for k in range(7)]
        expected += LOSS_FORMULAS[loss](pos, negs)
    assert len(b.sides) == 1 and b.sides[0][1].table is not None
    assert abs(float(b.loss.detach()) - expected) < 1e-3 * max(1.0, abs(expected))


def test_n3_regularizer_adds_cubed_moduli_for_complex_operators():
    base = {"model.operator": "complex_diagonal", "training.negatives": 0, "training.batch_negatives": False}
    config, model, lhs, rhs, relations = _setup({**base, "model.regularizer": "n3", "model.regularization": 0.5})
    lhs_idx, rhs_idx = torch.tensor([1, 2]), torch.tensor([3, 3])
    b = batch_loss(model, lhs, rhs, relations, 0, lhs_idx, rhs_idx, None, config.training, torch.Generator())

    def n3(x):
        return float((_complex(x).abs() ** 3).sum())

    expected = 0.5 * (n3(lhs.emb[lhs_idx]) + n3(rhs.emb[rhs_idx]) + 2 * n3(relations.param(0)))
    assert abs(float(b.loss.detach()) - expected) < 1e-4
    config, model, lhs, rhs, relations = _setup({**base, "model.regularizer": "l2", "model.regularization": 0.5})
    b = batch_loss(model, lhs, rhs, relations, 0, lhs_idx, rhs_idx, None, config.training, torch.Generator())
    expected = 0.5 * float(lhs.emb[lhs_idx].pow(2).sum() + rhs.emb[rhs_idx].pow(2).sum()
                           + 2 * relations.param(0).pow(2).sum())
    assert abs(float(b.loss.detach()) - expected) < 1e-4
    # each edge's penalty is weighted as its loss is: weight 0 penalises nothing
    weights = torch.tensor([0.0, 3.0])
    b = batch_loss(model, lhs, rhs, relations, 0, lhs_idx, rhs_idx, weights, config.training, torch.Generator())
    expected = 0.5 * 3 * float(lhs.emb[2].pow(2).sum() + rhs.emb[3].pow(2).sum() + relations.param(0).pow(2).sum())
    assert abs(float(b.loss.detach()) - expected) < 1e-4


def test_degree_negatives_come_from_the_pool():
    pool = torch.tensor([7, 7, 7, 9])
    idx = sample_negatives(1000, 5, 10, 0.6, pool, torch.Generator().manual_seed(0))
    assert idx.shape == (5, 10)
    assert set(idx[:, :6].reshape(-1).tolist()) <= {7, 9}
    assert (idx[:, :6] == 7).float().mean() > 0.5  # in proportion to the pool's counts
    assert sample_negatives(1000, 5, 10, 0.0, pool, torch.Generator()).shape == (5, 10)


def test_per_relation_operators_have_their_own_parameter_slices():
    config = load_config(overrides={"model.dim": 4, "model.operator": "diagonal", "model.reciprocal": False,
                                    "relations.b.operator": "linear", "relations.c.operator": "none"})
    model = Model.from_config(config, ["a", "b", "c"])
    assert [s.operator_name for s in model.specs] == ["diagonal", "linear", "none"]
    params = initial_params(model.specs, 4)
    assert params.numel() == 4 + 16
    state = RelationState(model.specs, params, torch.zeros_like(params))
    assert torch.equal(state.param(1), torch.eye(4)) and state.param(2) is None
    state.param(1).add_(1.0)  # a view: writes reach the flat vector
    assert float(params[4:].sum()) == 16 + 4


def test_reciprocal_adds_inverse_relations_that_corrupt_the_rhs_only():
    config = load_config(overrides={"model.dim": 4, "model.operator": "complex_diagonal", "model.reciprocal": True})
    specs = Model.from_config(config, ["a", "b"]).specs
    assert [s.name for s in specs] == ["a", "b", "a (inverse)", "b (inverse)"]
    assert {s.sides for s in specs} == {"rhs"}


def test_train_batch_lowers_the_loss_and_touches_only_batch_rows():
    config, model, lhs, rhs, relations = _setup({"model.operator": "translation", "training.chunk_size": 2,
                                                  "training.negatives": 0, "training.lr": 0.05})
    before_l, before_r = lhs.emb.clone(), rhs.emb.clone()
    lhs_idx, rhs_idx = torch.tensor([0, 1]), torch.tensor([2, 3])
    first = train_batch(model, lhs, rhs, relations, 0, lhs_idx, rhs_idx, None, config.training, torch.Generator())
    assert torch.equal(lhs.emb[2:], before_l[2:]) and torch.equal(rhs.emb[[0, 1, 4, 5]], before_r[[0, 1, 4, 5]])
    assert not torch.equal(lhs.emb[:2], before_l[:2])
    for _ in range(20):
        last = train_batch(model, lhs, rhs, relations, 0, lhs_idx, rhs_idx, None, config.training,
                           torch.Generator())
    assert last < first


@pytest.mark.parametrize("all_negatives", [False, True])
def test_extra_partitions_are_negatives_only_when_passed_and_get_their_gradient(all_negatives):
    """A resident partition outside the bucket is a source of negatives only when given as an
    extra; then its rows move (sampled: only rows drawn; all negatives: every row)."""
    config, model, lhs, rhs, relations = _setup({
        "model.operator": "diagonal", "model.loss": "softmax", "training.negatives": 40,
        "training.all_negatives": all_negatives, "training.lr": 0.1})
    gen = torch.Generator().manual_seed(3)
    third = PartitionState(torch.randn(5, 4, generator=gen), torch.zeros(5))
    lhs_idx, rhs_idx = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    before = third.emb.clone()
    train_batch(model, lhs, rhs, relations, 0, lhs_idx, rhs_idx, None, config.training, torch.Generator())
    assert torch.equal(third.emb, before)
    b = batch_loss(model, lhs, rhs, relations, 0, lhs_idx, rhs_idx, None, config.training,
                   torch.Generator().manual_seed(0), extras=[third])
    for _, negs in b.sides:
        assert [id(src.state) for src in negs.sources][1:] in ([id(lhs), id(third)], [id(rhs), id(third)])
        if not all_negatives:  # 40 uniform negatives split 7 : 6 : 5 by rows (own partition first)
            assert sum(src.idx.shape[1] for src in negs.sources) == 40
    train_batch(model, lhs, rhs, relations, 0, lhs_idx, rhs_idx, None, config.training,
                torch.Generator().manual_seed(0), extras=[third])
    moved = (third.emb != before).any(1)
    if all_negatives:
        assert moved.all()
    else:
        drawn = set()
        for _, negs in b.sides:
            drawn |= set(negs.sources[2].idx.flatten().tolist())
        assert set(moved.nonzero().flatten().tolist()) == drawn and drawn


def test_plan_batches_groups_by_relation_and_covers_every_edge():
    rel = torch.tensor([0, 1, 0, 2, 1, 0, 0])
    batches = plan_batches(rel, 2, True, torch.Generator().manual_seed(0))
    seen = torch.cat([pos for _, pos in batches]).sort().values
    assert torch.equal(seen, torch.arange(7))
    for r, pos in batches:
        assert (rel[pos] == r).all() and pos.numel() <= 2


def test_per_coordinate_adagrad_matches_the_formula_sparse_and_dense():
    torch.manual_seed(5)
    table, state = torch.randn(4, 3), torch.rand(4, 3)
    index, grad = torch.tensor([2, 0, 2]), torch.randn(3, 3)
    expected_t, expected_s = table.clone(), state.clone()
    for row in (0, 2):
        g = grad[index == row].sum(0)
        expected_s[row] += g * g
        expected_t[row] -= 0.2 * g / (expected_s[row].sqrt() + EPS)
    row_adagrad_(table, state, index, grad, 0.2)
    assert torch.allclose(table, expected_t) and torch.allclose(state, expected_s)
    dense = torch.randn(4, 3)
    t2, s2 = table.clone(), state.clone()
    dense_row_adagrad_(table, state, dense, 0.2)
    assert torch.allclose(state, s2 + dense * dense)
    assert torch.allclose(table, t2 - 0.2 * dense / (state.sqrt() + EPS))


def test_a_mixed_relation_batch_equals_its_per_relation_batches():
    """Reciprocal ComplEx with all negatives may mix relations; the loss is the per-relation sum."""
    from bigembed.trainer.model import mixes_with_params

    config, model, lhs, rhs, relations = _setup({
        "model.operator": "complex_diagonal", "model.loss": "softmax", "model.reciprocal": True,
        "model.regularizer": "n3", "model.regularization": 0.1, "training.all_negatives": True},
        relations=("a", "b", "c"))
    assert mixes_with_params(model)
    lhs_idx, rhs_idx = torch.tensor([0, 1, 2, 3, 4]), torch.tensor([5, 4, 3, 2, 1])
    rels = torch.tensor([0, 2, 1, 0, 2])
    mixed = batch_loss(model, lhs, rhs, relations, 0, lhs_idx, rhs_idx, None, config.training,
                       torch.Generator(), rels=rels)
    separate = sum(
        float(batch_loss(model, lhs, rhs, relations, r, lhs_idx[rels == r], rhs_idx[rels == r], None,
                         config.training, torch.Generator()).loss.detach())
        for r in range(3)
    )
    assert abs(float(mixed.loss.detach()) - separate) < 1e-4
    assert mixed.params.shape == (6, 4)  # three relations and their inverses, dim 4


def test_mixing_needs_one_elementwise_operator_and_rhs_only_negatives():
    from bigembed.trainer.model import mixes_with_params

    both = Model.from_config(load_config(overrides={"model.operator": "diagonal", "model.reciprocal": False}),
                             ["a", "b"])
    assert not mixes_with_params(both)  # lhs corruption would need each query's own operator
    linear = Model.from_config(load_config(overrides={"model.operator": "linear", "model.reciprocal": True}), ["a"])
    assert not mixes_with_params(linear)


def test_relation_init_random_draws_small_parameters_and_identity_starts_at_a_no_op():
    config = load_config(overrides={"model.dim": 4, "model.operator": "complex_diagonal", "model.reciprocal": False})
    specs = Model.from_config(config, ["a", "b"]).specs
    identity = initial_params(specs, 4)
    assert torch.equal(identity, torch.tensor([1.0, 1, 0, 0] * 2))
    random = initial_params(specs, 4, 0.001, torch.Generator().manual_seed(0))
    assert random.shape == identity.shape and 0 < float(random.abs().max()) < 0.01


def test_softmax_correction_shifts_the_sampled_negatives_and_can_be_turned_off():
    """With ``model.softmax_correction`` the sampled softmax weights each of its U uniform
    negatives as N / U of the N candidates; without it, the plain softmax over the sample. The
    fused and the autograd step agree on both."""
    lhs_idx, rhs_idx = torch.tensor([0, 2, 4, 1]), torch.tensor([5, 4, 3, 1])
    losses = {}
    for correction in (True, False):
        config, model, lhs, rhs, relations = _setup({
            "model.loss": "softmax", "model.softmax_correction": correction, "model.comparator": "dot",
            "training.chunk_size": 2, "training.negatives": 3},
            lhs_rows=9, rhs_rows=9)
        b = batch_loss(model, lhs, rhs, relations, 0, lhs_idx, rhs_idx, None, config.training,
                       torch.Generator().manual_seed(2))
        assert softmax_shift(model, config.training, [n for _, n in b.sides]) == (
            pytest.approx(math.log(9 / 3)) if correction else 0.0)
        fused = fused_gradients(model, lhs, rhs, relations, 0, lhs_idx, rhs_idx, None, config.training,
                                torch.Generator().manual_seed(2))
        assert fused is not None and float(fused[0].loss) == pytest.approx(float(b.loss.detach()), rel=1e-5)
        losses[correction] = float(b.loss.detach())
    # every sampled negative's weight triples (9 rows, 3 negatives), so each edge's loss grows
    assert losses[True] > losses[False] + 0.1
