"""The fused training step: sampled-negative scoring and its gradients without autograd.

Profiling the autograd step on PyTorch-BigGraph's default shape (dot comparator,
ranking loss, chunks of 50 edges, 50 in-batch + 50 uniform negatives, d=128)
showed under a third of the time in the matrix multiplies; the rest went to
autograd's bookkeeping: concatenating candidates, masking, zero-filled slice
gradients, copies. This step writes the gradient of the score blocks by hand
(each loss knows its own, :meth:`Loss.with_grads`) and shares work between the
two corrupted sides. Per chunk of ``c`` edges with queries ``Q = op(L)``, rhs
rows ``R``, sampled rhs rows ``Nr`` and sampled lhs rows after the operator
``Ml``:

* ``A = Q R^T`` (c, c) holds the positives on its diagonal and the in-batch
  negatives of both sides: the rhs side reads its rows, the lhs side its columns
  (every comparator is symmetric, and the lhs side's in-batch candidates are the
  same ``op(L)`` rows);
* ``Sr = Q Nr^T`` and ``Sl = R Ml^T`` are the sampled negatives' scores;
* then ``dQ = dA R + dSr Nr``, ``dR = dA^T Q + dSl Ml``, ``dNr = dSr^T Q``,
  ``dMl = dSl^T R``.

That is 9 block products per chunk where autograd does 12 (it scores the
in-batch block once per side), and no concatenation or masking copies. In the
common case (both sides corrupted, in-batch and sampled negatives, full chunks, no
operator parameters, ``dot``) the rows are gathered with each chunk's ``R`` beside
``Nr``, so ``A`` and ``Sr`` come from one product twice as wide, and the backward
products widen the same way (:func:`~bigembed.trainer.kernels.wide_score_gradients`). With
the ranking loss, once training is under way, only a few percent of the hinges are active:
a C kernel (:mod:`bigembed.trainer.native`) then replaces the backward products with row
updates for the active ones. The
scoring and the Adagrad update run as TorchScript (:mod:`bigembed.trainer.kernels`),
without the interpreter lock, so Hogwild threads overlap.

What comes before the scores (the relation operator, the ``cos`` comparator's
normalisation, the regulariser) is small element-wise work on the batch's rows:
when there is any, autograd carries the block gradients back through it. With no
operator parameters, ``dot`` and no regulariser, no graph is built at all.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch
from torch import Tensor

from bigembed.config import TrainingConfig
from bigembed.trainer import native
from bigembed.trainer.batch import (
    BatchLoss,
    Negatives,
    _regularizer,
    gather,
    gather_into,
    sample_sources,
    softmax_shift,
)
from bigembed.trainer.kernels import LOSS_RANKING, fused_score_gradients, fused_wide_score_gradients, fused_wide_scores
from bigembed.trainer.model import CosComparator, DotComparator, Model, _unit
from bigembed.trainer.relations import RelationSpec, RelationState
from bigembed.trainer.state import PartitionState

SPARSE_SHARE = 0.2  # above this share of active hinges the dense products are faster (benchmarks/RESULTS.md)
DENSE_SPELL = 32  # batches on the dense products before the sparse kernel is tried again

# With ``training.ranking_gradients = auto``: batches left on the dense products, per worker
# thread (each worker decides from its own batches only)
_choice = threading.local()


def reset_kernel_choice() -> None:
    """Start this thread's choice between the sparse and the dense ranking gradients afresh (at
    each slab), so that a run resumed from a checkpoint makes the same choices as one that was
    not stopped."""
    _choice.dense_left = 0


def fused_supported(model: Model, spec: RelationSpec) -> bool:
    """Whether :func:`fused_gradients` handles batches of ``spec``: sampled negatives (not all
    negatives) scored by a dot product (``dot``, or ``cos`` on normalised rows)."""
    return isinstance(model.comparator, (DotComparator, CosComparator)) and not spec.all_negatives


def fused_gradients(model: Model, lhs: PartitionState, rhs: PartitionState, relations: RelationState,
                    relation: int, lhs_idx: Tensor, rhs_idx: Tensor, weights: Tensor | None,
                    config: TrainingConfig, generator: torch.Generator,
                    pools: tuple[Tensor, Tensor] | None = None, rels: Tensor | None = None,
                    extras: Sequence[PartitionState] | None = None, lib: native.Lib = native.RESOLVE
                    ) -> tuple[BatchLoss, dict[int, Tensor]] | None:
    """The batch's loss and the gradient of every leaf (keyed by ``id``), as ``batch_loss``
    followed by autograd would give them, for a batch :func:`fused_supported` accepts. Draws
    the same negatives from ``generator``. None when the batch has nothing to learn from.
    ``lib``: the C kernels, None (TorchScript), or RESOLVE (:mod:`bigembed.trainer.native`)."""
    lib = native.resolved(lib)
    spec = model.specs[relation]
    params = relations.param(relation) if rels is None else relations.stacked()
    if params is not None:
        params = params.clone().requires_grad_()
    edge_params = params if rels is None or params is None else params[rels]
    B, d = lhs_idx.shape[0], lhs.emb.shape[1]
    chunk = min(config.chunk_size, B)
    n_chunks = -(-B // chunk)
    dev = lhs.emb.device
    w = torch.full((B,), spec.weight, device=dev) if weights is None else weights * spec.weight
    corrupted = [side for side in (False, True) if spec.sides != ("rhs" if side else "lhs")]
    negs = {side: sample_sources(spec, lhs, rhs, extras, side, pools, config, n_chunks, generator, gather_rows=False)
            for side in corrupted}
    regularize = model.regularizer != "none" and model.regularization > 0
    cos = isinstance(model.comparator, CosComparator)
    G = relations.global_leaf()  # model.global_emb: each type's vector is added to its rows
    track = params is not None or cos or regularize or G is not None  # else the scored rows are the leaves
    if (not track and len(corrupted) == 2 and config.batch_negatives and chunk > 1 and config.negatives > 0
            and B % chunk == 0 and all(len(n.sources) == 1 for n in negs.values())):
        return _wide_gradients(model, lhs, rhs, lhs_idx, rhs_idx, w, chunk, config.negatives, negs,
                               softmax_shift(model, config, list(negs.values())), lib, config.ranking_gradients)
    # the batch's rows gathered side by side, so both sides' products run as one
    X = torch.empty(2, B, d, device=dev)
    gather_into(X[0], lhs.emb, lhs_idx, lib)
    gather_into(X[1], rhs.emb, rhs_idx, lib)
    L, R = X[0].requires_grad_(), X[1].requires_grad_()
    Y = torch.empty(len(corrupted), n_chunks, config.negatives, d, device=dev)
    for k, side in enumerate(corrupted):
        sources = negs[side].sources
        if len(sources) == 1:
            src = sources[0]
            assert src.idx is not None
            gather_into(Y[k].view(-1, d), src.state.emb, src.idx.reshape(-1), lib)
            src.rows = Y[k].requires_grad_()
        else:
            for src in sources:
                assert src.idx is not None
                src.rows = gather(src.state.emb, src.idx).requires_grad_()
            torch.cat([src.rows.detach() for src in sources if src.rows is not None], 1, out=Y[k])
    scored = config.negatives > 0 or (config.batch_negatives and chunk > 1)
    if not scored and not regularize:
        return None
    Xp, Yp, reg = X, Y, None
    if track:
        with torch.enable_grad():
            Lg, Rp = (L, R) if G is None else (L + G[spec.lhs_type], R + G[spec.rhs_type])
            Q = spec.operator.apply(Lg, edge_params)
            sampled = {side: n.all_rows() for side, n in negs.items()}
            if G is not None:
                sampled = {side: t + G[spec.lhs_type if side else spec.rhs_type] for side, t in sampled.items()}
            if True in sampled:
                sampled[True] = spec.operator.apply(sampled[True], params)
            if cos:
                Q, Rp = _unit(Q), _unit(Rp)
                sampled = {side: _unit(t) for side, t in sampled.items()}
            Xp = torch.stack([Q, Rp])
            Yp = torch.stack([sampled[side] for side in corrupted])
            if regularize:
                reg = _regularizer(model, spec, [L, R], edge_params, w, mixed=rels is not None)
    with torch.no_grad():
        if scored:
            total, dX, dY = fused_score_gradients(model.loss.kind, model.loss.margin, Xp.detach(), Yp.detach(),
                                                  False in negs, True in negs, w, chunk, config.batch_negatives,
                                                  softmax_shift(model, config, list(negs.values())))
        else:
            total, dX, dY = X.new_zeros(()), torch.zeros_like(X), torch.zeros_like(Y)
    rows = [src.rows for _, n in negs.items() for src in n.sources if src.rows is not None]
    leaves = [L, R, *rows] + [t for t in (params, G) if t is not None]
    if track:
        outputs, out_grads = [Xp, Yp], [dX, dY]
        if reg is not None:
            outputs.append(reg)
            out_grads.append(torch.ones((), device=dev))
            total = total + reg.detach()
        grads = torch.autograd.grad(outputs, leaves, out_grads, allow_unused=True)
        by_id = {id(t): g for t, g in zip(leaves, grads, strict=True) if g is not None}
    else:
        by_id = {id(L): dX[0], id(R): dX[1]}
        for k, side in enumerate(corrupted):
            rows = [src.rows for src in negs[side].sources if src.rows is not None]
            pieces = dY[k].split([t.shape[1] for t in rows], 1) if len(rows) > 1 else (dY[k],)
            for t, piece in zip(rows, pieces, strict=True):
                by_id[id(t)] = piece
    return BatchLoss(total, L, R, params, list(negs.items()), globals=G), by_id


def _wide_gradients(model: Model, lhs: PartitionState, rhs: PartitionState, lhs_idx: Tensor, rhs_idx: Tensor,
                    w: Tensor, chunk: int, U: int, negs: dict[bool, Negatives],
                    shift: float = 0.0, lib: native.Lib = native.RESOLVE,
                    mode: str = "auto") -> tuple[BatchLoss, dict[int, Tensor]]:
    """The fused step through :func:`~bigembed.trainer.kernels.wide_score_gradients`: the rows
    gathered as it lays them out (each chunk's rhs rows beside the rhs side's sampled rows), and
    the gradients handed back as pieces of one buffer with the rows they belong to. The ranking
    loss goes through the C kernel (:mod:`bigembed.trainer.native`) where it is built, which
    skips the inactive hinges (``mode``: ``training.ranking_gradients``), unless this worker's
    last try found too many of them active."""
    B, d = lhs_idx.shape[0], lhs.emb.shape[1]
    nr, ml = negs[False].own, negs[True].own  # the rhs side's sampled rows, the lhs side's
    assert nr.idx is not None and ml.idx is not None
    z_idx = torch.cat([rhs_idx.view(-1, chunk), nr.idx], 1).view(-1)
    ml_idx = ml.idx.reshape(-1)
    nz = z_idx.shape[0]
    W = torch.empty(nz + B + ml_idx.shape[0], d, device=lhs.emb.device)
    lib = native.resolved(lib)
    gather_into(W[:nz], rhs.emb, z_idx, lib)
    gather_into(W[nz : nz + B], lhs.emb, lhs_idx, lib)
    gather_into(W[nz + B :], ml.state.emb, ml_idx, lib)
    lib = lib if model.loss.kind == LOSS_RANKING and mode != "dense" and W.is_cpu else None
    dense_left = getattr(_choice, "dense_left", 0)
    with torch.no_grad():
        if lib is not None and dense_left == 0:
            S1, Sl = fused_wide_scores(W, chunk, U, B)
            weight = w.float().contiguous()
            total, dW, active = native.wide_ranking(lib, model.loss.margin, W, S1, Sl, weight, chunk, U)
            if mode == "auto" and active > SPARSE_SHARE * B * (2 * (chunk + U) - 2):  # all hinges, both sides
                _choice.dense_left = DENSE_SPELL
        else:
            if lib is not None:
                _choice.dense_left = dense_left - 1
            total, dW = fused_wide_score_gradients(model.loss.kind, model.loss.margin, W, w, chunk, U, shift)
    # in the buffer's order, so that pieces of one partition are neighbours in memory
    pieces = [(rhs, z_idx, dW[:nz]), (lhs, lhs_idx, dW[nz : nz + B]), (ml.state, ml_idx, dW[nz + B :])]
    R = W[:nz].view(-1, chunk + U, d)[:, :chunk]  # a view (chunks, c, dim): no copy on the hot path
    return BatchLoss(total, W[nz : nz + B], R, None, list(negs.items()), pieces), {}
