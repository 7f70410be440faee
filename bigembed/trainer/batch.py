"""One training step: score a batch against chunked negatives, update the rows it touched.

A batch of B edges (all of one relation) is cut into chunks of C edges. Each
chunk's positives are corrupted on both sides with the chunk's own other edges
(in-batch negatives) and U uniform rows from the bucket's partitions, shared by
the whole chunk, so scoring is a batched matrix multiply:
(chunks, C, dim) x (chunks, dim, C + U).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bigembed.config import ModelConfig, TrainingConfig
from bigembed.trainer.adagrad import dense_adagrad_, row_adagrad_
from bigembed.trainer.model import Comparator, Loss, Operator, make_comparator, make_loss, make_operator
from bigembed.trainer.negatives import in_chunk_mask, sample_uniform
from bigembed.trainer.state import PartitionState, RelationState


@dataclass(frozen=True)
class Model:
    operator: Operator
    comparator: Comparator
    loss: Loss

    @classmethod
    def from_config(cls, config: ModelConfig) -> Model:
        return cls(
            make_operator(config.operator),
            make_comparator(config.comparator),
            make_loss(config.loss, config.margin),
        )


def _group_loss(model: Model, L: Tensor, R: Tensor, UL: Tensor, UR: Tensor, params: Tensor | None) -> Tensor:
    """``L``, ``R``: (n, c, dim) positives; ``UL``, ``UR``: (n, u, dim) uniform negatives."""
    c = L.shape[1]
    lhs_op = model.operator.apply(L, params)
    pos = model.comparator.positive(lhs_op, R)
    mask = in_chunk_mask(c, c + UR.shape[1])
    neg_rhs = model.comparator.negative(lhs_op, torch.cat([R, UR], 1))
    # Comparators are symmetric, so corrupting the lhs scores rhs against op(lhs').
    neg_lhs = model.comparator.negative(R, model.operator.apply(torch.cat([L, UL], 1), params))
    return model.loss(pos, neg_rhs, mask) + model.loss(pos, neg_lhs, mask)


def batch_loss(
    model: Model,
    lhs: PartitionState,
    rhs: PartitionState,
    lhs_idx: Tensor,
    rhs_idx: Tensor,
    params: Tensor | None,
    chunk_size: int,
    negatives: int,
    generator: torch.Generator,
) -> tuple[Tensor, list[Tensor], Tensor, Tensor]:
    """Loss of one batch and the leaves it depends on.

    Returns ``(loss, [L, R, UL, UR], ul_idx, ur_idx)``; ``L``/``R``: (B, dim) rows
    of ``lhs_idx``/``rhs_idx``; ``UL``/``UR``: (chunks, U, dim) uniform negatives.
    """
    B = lhs_idx.shape[0]
    C = min(chunk_size, B)
    full = B // C
    rem = B - full * C
    chunks = full + (1 if rem else 0)
    ul_idx = sample_uniform(lhs.emb.shape[0], chunks, negatives, generator)
    ur_idx = sample_uniform(rhs.emb.shape[0], chunks, negatives, generator)
    L = lhs.emb[lhs_idx].requires_grad_()
    R = rhs.emb[rhs_idx].requires_grad_()
    UL = lhs.emb[ul_idx].requires_grad_()
    UR = rhs.emb[ur_idx].requires_grad_()
    d = L.shape[1]
    n = full * C
    loss = L.new_zeros(())
    if full:
        loss = loss + _group_loss(
            model, L[:n].view(full, C, d), R[:n].view(full, C, d), UL[:full], UR[:full], params
        )
    if rem:
        loss = loss + _group_loss(
            model, L[n:].unsqueeze(0), R[n:].unsqueeze(0), UL[full:], UR[full:], params
        )
    return loss, [L, R, UL, UR], ul_idx, ur_idx


def train_batch(
    model: Model,
    lhs: PartitionState,
    rhs: PartitionState,
    relations: RelationState,
    relation: int,
    lhs_idx: Tensor,
    rhs_idx: Tensor,
    config: TrainingConfig,
    generator: torch.Generator,
) -> float:
    """One Adagrad step on a batch of edges of ``relation``; returns the batch's summed loss.

    ``lhs_idx``/``rhs_idx``: (B,) int64 local offsets into ``lhs``/``rhs``.
    Updates ``lhs``, ``rhs`` and ``relations`` in place (Hogwild-safe: no locks).
    """
    params = None
    if relations.params is not None:
        params = relations.params[relation].clone().requires_grad_()
    loss, leaves, ul_idx, ur_idx = batch_loss(
        model, lhs, rhs, lhs_idx, rhs_idx, params, config.chunk_size, config.negatives, generator
    )
    if not loss.requires_grad:  # no negatives at all: nothing to learn from
        return 0.0
    wrt = leaves + ([params] if params is not None else [])
    grads = torch.autograd.grad(loss, wrt)
    gL, gR, gUL, gUR = grads[:4]
    d = gL.shape[1]
    lhs_rows = torch.cat([lhs_idx, ul_idx.reshape(-1)])
    lhs_grad = torch.cat([gL, gUL.reshape(-1, d)])
    rhs_rows = torch.cat([rhs_idx, ur_idx.reshape(-1)])
    rhs_grad = torch.cat([gR, gUR.reshape(-1, d)])
    if lhs is rhs:
        row_adagrad_(lhs.emb, lhs.adagrad, torch.cat([lhs_rows, rhs_rows]), torch.cat([lhs_grad, rhs_grad]), config.lr)
    else:
        row_adagrad_(lhs.emb, lhs.adagrad, lhs_rows, lhs_grad, config.lr)
        row_adagrad_(rhs.emb, rhs.adagrad, rhs_rows, rhs_grad, config.lr)
    if params is not None:
        assert relations.params is not None and relations.adagrad is not None
        dense_adagrad_(relations.params[relation], relations.adagrad[relation], grads[4], config.relation_lr)
    return float(loss.detach())
