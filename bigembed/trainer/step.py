"""One training step: a batch's gradients (fused or by autograd), then the Adagrad updates."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from bigembed.config import TrainingConfig
from bigembed.trainer import native
from bigembed.trainer.adagrad import SideGrads, dense_adagrad_
from bigembed.trainer.batch import BatchLoss, batch_loss
from bigembed.trainer.fused import fused_gradients, fused_supported
from bigembed.trainer.model import Model
from bigembed.trainer.relations import RelationState
from bigembed.trainer.state import PartitionState


def batch_gradients(model: Model, lhs: PartitionState, rhs: PartitionState, relations: RelationState,
                    relation: int, lhs_idx: Tensor, rhs_idx: Tensor, weights: Tensor | None,
                    config: TrainingConfig, generator: torch.Generator,
                    pools: tuple[Tensor, Tensor] | None = None, rels: Tensor | None = None,
                    extras: Sequence[PartitionState] | None = None, lib: native.Lib = native.RESOLVE
                    ) -> tuple[BatchLoss, dict[int, Tensor]] | None:
    """A batch's loss and the gradient of each of its leaves (keyed by ``id``; a leaf that
    got none is absent): by the fused step where it applies and ``training.fused_step`` is
    on, else by autograd through :func:`batch_loss`. The fused step's wide layout hands its
    row gradients over in ``BatchLoss.pieces`` instead (the dict then holds none). None:
    nothing to learn from. ``lib``: the C kernels, None, or RESOLVE (:mod:`bigembed.trainer.native`)."""
    args = (model, lhs, rhs, relations, relation, lhs_idx, rhs_idx, weights, config, generator, pools, rels,
            extras)
    if config.fused_step and fused_supported(model, model.specs[relation]):
        return fused_gradients(*args, lib=lib)
    b = batch_loss(*args)
    if not b.loss.requires_grad:
        return None
    leaves = [b.L, b.R] + [t for _, n in b.sides for t in n.leaves()]
    if b.params is not None:
        leaves.append(b.params)
    if b.globals is not None:
        leaves.append(b.globals)
    grads = torch.autograd.grad(b.loss, leaves, allow_unused=True)
    return b, {id(t): g for t, g in zip(leaves, grads, strict=True) if g is not None}


def train_batch(model: Model, lhs: PartitionState, rhs: PartitionState, relations: RelationState,
                relation: int, lhs_idx: Tensor, rhs_idx: Tensor, weights: Tensor | None,
                config: TrainingConfig, generator: torch.Generator,
                pools: tuple[Tensor, Tensor] | None = None, rels: Tensor | None = None,
                extras: Sequence[PartitionState] | None = None, lib: native.Lib = native.RESOLVE) -> float:
    """One Adagrad step on a batch of edges of ``relation``; returns the batch's summed loss.

    ``lhs_idx``/``rhs_idx``: (B,) int64 local offsets into ``lhs``/``rhs``;
    ``weights``: (B,) float32 edge weights or None; ``pools``: lhs and rhs row
    indices of the slab's edges whose side has the relation's entity type, for
    degree-proportional negatives. Negatives of a side are rows of that side's
    entity type only. Updates
    ``lhs``, ``rhs`` and ``relations`` in place (Hogwild-safe: no locks). ``lib``: the C
    kernels as the trainer resolved them once (None: TorchScript), or RESOLVE to look them up.
    """
    step = batch_gradients(model, lhs, rhs, relations, relation, lhs_idx, rhs_idx, weights, config, generator,
                           pools, rels, extras, lib)
    if step is None:  # no negatives at all: nothing to learn from
        return 0.0
    b, grads = step

    def grad_of(t: Tensor) -> Tensor:
        g = grads.get(id(t))
        return torch.zeros_like(t) if g is None else g

    per_state: dict[int, tuple[PartitionState, SideGrads]] = {}

    def grads_for(state: PartitionState) -> SideGrads:
        return per_state.setdefault(id(state), (state, SideGrads()))[1]

    if b.pieces is not None:
        for state, rows, grad in b.pieces:
            grads_for(state).add_rows(rows, grad)
    else:
        grads_for(lhs).add_rows(lhs_idx, grad_of(b.L))
        grads_for(rhs).add_rows(rhs_idx, grad_of(b.R))
        for _, negs in b.sides:
            for src in negs.sources:
                if src.table is not None:
                    grads_for(src.state).add_dense(grad_of(src.table), src.start)
                elif src.rows is not None and src.idx is not None:
                    grads_for(src.state).add_rows(src.idx, grad_of(src.rows))
    for state, side_grads in per_state.values():
        side_grads.apply(state, config.lr, model.max_norm, lib)
    if b.params is not None:
        if rels is None:
            view, acc = relations.param(relation), relations.adagrad_of(relation)
        else:
            view, acc = relations.stacked(), relations.stacked(relations.adagrad)
        assert view is not None and acc is not None
        dense_adagrad_(view, acc, grad_of(b.params), config.relation_lr)
    if b.globals is not None:
        assert relations.globals is not None and relations.globals_adagrad is not None
        dense_adagrad_(relations.globals, relations.globals_adagrad, grad_of(b.globals), config.relation_lr)
    return float(b.loss.detach())
