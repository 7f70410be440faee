"""Half-precision storage: float32 math on widened rows, each update rounded once.

A step on a float16/bfloat16 table must equal the same step on a float32 table holding
the same (widened) values, rounded to the stored precision at the end: the rows are
widened when gathered, the gradients and the Adagrad update are float32, and only the
write-back rounds. Rows the step does not touch stay bit for bit."""

from __future__ import annotations

import pytest
import torch

from bigembed.trainer import PartitionState
from bigembed.trainer.adagrad import dense_row_adagrad_, row_adagrad_
from bigembed.trainer.batch import gather, gather_into
from bigembed.trainer.state import PartitionState as State
from bigembed.trainer.step import train_batch
from tests.trainer.test_math import _setup

HALF = [torch.float16, torch.bfloat16]


def _halved(state: PartitionState, dtype: torch.dtype) -> tuple[PartitionState, PartitionState]:
    """The state rounded to ``dtype``, and a float32 state with exactly the rounded values."""
    half = State(state.emb.to(dtype), state.adagrad.clone())
    return half, State(half.emb.float(), state.adagrad.clone())


@pytest.mark.parametrize("dtype", HALF)
def test_gathers_widen_half_rows_exactly(dtype):
    table = torch.randn(9, 5).to(dtype)
    idx = torch.tensor([[4, 0], [4, 8]])
    rows = gather(table, idx)
    assert rows.dtype == torch.float32 and rows.shape == (2, 2, 5)
    assert torch.equal(rows, table.float()[idx])
    out = torch.empty(3, 5)
    gather_into(out, table, torch.tensor([2, 2, 7]))
    assert torch.equal(out, table.float()[[2, 2, 7]])


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("per_coordinate", [False, True])
def test_row_adagrad_on_a_half_table_is_the_float32_step_rounded(dtype, per_coordinate):
    gen = torch.Generator().manual_seed(4)
    table = torch.randn(40, 6, generator=gen).to(dtype)
    state = torch.rand((40, 6) if per_coordinate else (40,), generator=gen)
    before, wide, wide_state = table.clone(), table.float(), state.clone()
    indices = [torch.tensor([3, 9, 3, 17]), torch.tensor([9, 21, 0])]  # repeats within and across pieces
    grads = [torch.randn(i.shape[0], 6, generator=gen) for i in indices]
    row_adagrad_(wide, wide_state, indices, grads, 0.2)
    row_adagrad_(table, state, indices, grads, 0.2)
    assert table.dtype == dtype
    assert torch.equal(table, wide.to(dtype))
    assert torch.equal(state, wide_state)  # the accumulators stay float32
    moved = (table != before).any(1)
    assert set(moved.nonzero().flatten().tolist()) == {0, 3, 9, 17, 21}


@pytest.mark.parametrize("dtype", HALF)
def test_dense_row_adagrad_and_max_norm_on_a_half_table(dtype):
    gen = torch.Generator().manual_seed(5)
    table, grad = torch.randn(8, 4, generator=gen).to(dtype), torch.randn(8, 4, generator=gen)
    state = torch.rand(8, generator=gen)
    wide, wide_state = table.float(), state.clone()
    dense_row_adagrad_(wide, wide_state, grad, 0.3)
    dense_row_adagrad_(table, state, grad, 0.3)
    assert torch.equal(table, wide.to(dtype)) and torch.equal(state, wide_state)
    # rows pushed far beyond max_norm come back to it, within the stored precision
    row_adagrad_(table, state, torch.tensor([1, 6]), torch.full((2, 4), -50.0), 10.0, max_norm=1.0)
    norms = torch.linalg.vector_norm(table[[1, 6]].float(), dim=1)
    tolerance = 2 ** -7 if dtype == torch.bfloat16 else 2 ** -10
    assert torch.all((norms - 1.0).abs() <= 2 * tolerance), norms


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("overrides", [
    {"training.negatives": 3, "training.chunk_size": 2},  # the fused step
    {"training.negatives": 3, "training.chunk_size": 2, "training.fused_step": False,
     "model.operator": "diagonal"},  # autograd, with operator parameters
    {"training.all_negatives": True, "model.loss": "softmax"},  # dense gradients over whole partitions
])
def test_a_training_step_on_half_tables_is_the_float32_step_rounded(dtype, overrides):
    config, model, lhs, rhs, relations = _setup({"training.lr": 0.1, **overrides}, dim=8)
    lhs_h, lhs_f = _halved(lhs, dtype)
    rhs_h, rhs_f = _halved(rhs, dtype)
    params = relations.params.clone()
    lhs_idx, rhs_idx = torch.tensor([0, 1, 2, 1]), torch.tensor([3, 4, 5, 0])
    loss_f = train_batch(model, lhs_f, rhs_f, relations, 0, lhs_idx, rhs_idx, None, config.training,
                         torch.Generator().manual_seed(9))
    relations.params.copy_(params)
    relations.adagrad.zero_()
    loss_h = train_batch(model, lhs_h, rhs_h, relations, 0, lhs_idx, rhs_idx, None, config.training,
                         torch.Generator().manual_seed(9))
    assert loss_h == pytest.approx(loss_f, rel=1e-6)
    assert lhs_h.emb.dtype == dtype and rhs_h.emb.dtype == dtype
    assert torch.equal(lhs_h.emb, lhs_f.emb.to(dtype)) and torch.equal(rhs_h.emb, rhs_f.emb.to(dtype))
    assert not torch.equal(lhs_h.emb, lhs.emb.to(dtype))  # the step did move rows


@pytest.mark.parametrize("dtype", HALF)
def test_initial_half_tables_are_seeded_scaled_and_drawn_block_by_block(dtype, monkeypatch):
    from bigembed.trainer import state as state_module

    monkeypatch.setattr(state_module, "INIT_BLOCK_VALUES", 64)  # 8 rows of dim 8 a block: 7 blocks, the last short
    first = State.initial(50, 8, 0.5, torch.Generator().manual_seed(3), dtype=dtype)
    again = State.initial(50, 8, 0.5, torch.Generator().manual_seed(3), dtype=dtype)
    other = State.initial(50, 8, 0.5, torch.Generator().manual_seed(4), dtype=dtype)
    assert first.emb.dtype == dtype and first.emb.shape == (50, 8) and first.adagrad.dtype == torch.float32
    assert torch.equal(first.emb, again.emb) and not torch.equal(first.emb, other.emb)
    assert 0.4 < float(first.emb.float().std()) < 0.6
    assert len({tuple(first.emb[r].tolist()) for r in range(50)}) == 50  # no block repeats another
