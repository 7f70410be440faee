"""The hot loops of the fused training step, compiled with TorchScript.

A training step on the CPU is some 150 small tensor operations. Run from Python,
each one parses its arguments while holding the interpreter lock, so Hogwild
worker threads queue behind each other (measured: 2 threads ran tiny operations
0.8x as fast as one). Compiled by TorchScript, a whole function runs without the
lock, the workers overlap fully, and the per-operation cost falls too. The
functions below are plain typed Python; :func:`compiled` scripts them once, and
falls back to the Python function where TorchScript is unavailable (it is
deprecated in favour of ``torch.compile``, which needs a C++ compiler at run time
and keeps the lock between kernels; TorchScript still ships in every torch this
project supports).

``LOSS_*``: the losses by number, as TorchScript has no polymorphism over classes (the
functions compare with the literal numbers: TorchScript reads no module globals).
"""

import warnings
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

LOSS_RANKING = 0
LOSS_LOGISTIC = 1
LOSS_SOFTMAX = 2

F = TypeVar("F", bound=Callable[..., object])


def loss_grads(kind: int, margin: float, pos: Tensor, negs: list[Tensor], weight: Tensor,
               masked: int) -> tuple[Tensor, Tensor, list[Tensor]]:
    """A loss and its gradients without autograd: ``sum(weight * loss(pos, negs))``.

    ``pos``: (..., n); ``negs``: blocks (..., n, m_k) read as their concatenation along
    the last axis (not modified); ``masked``: how many negatives of each row are ``-inf``
    (they add nothing and get no gradient). Returns (loss, d loss / d pos, [d loss / d block]).
    """
    grads: list[Tensor] = []
    if kind == 0:  # LOSS_RANKING: sum_j max(0, margin - pos + neg_j)
        total = pos.new_zeros(())
        dpos = torch.zeros_like(pos)
        shift = (margin - pos).unsqueeze(-1)
        w = weight.unsqueeze(-1)
        for neg in negs:
            hinge = (neg + shift).clamp_min_(0.0)
            total += (hinge.sum(-1) * weight).sum()
            grad = hinge.sign_().mul_(w)  # relu's gradient: 1 where positive, 0 at the kink, as autograd's
            dpos -= grad.sum(-1)
            grads.append(grad)
        return total, dpos, grads
    if kind == 1:  # LOSS_LOGISTIC: softplus(-pos) + mean_j softplus(neg_j)
        count = 0
        for neg in negs:
            count += neg.shape[-1]
        valid = max(1, count - masked)
        total = (torch.nn.functional.softplus(-pos) * weight).sum()
        dpos = torch.sigmoid(-pos).mul_(weight).neg_()
        scale = weight / valid
        for neg in negs:
            total += (torch.nn.functional.softplus(neg).sum(-1) * scale).sum()
            grads.append(torch.sigmoid(neg).mul_(scale.unsqueeze(-1)))
        return total, dpos, grads
    # softmax: logsumexp over the positive and the negatives, minus the positive
    top = pos.clone()
    for neg in negs:
        if neg.shape[-1] > 0:
            top = torch.maximum(top, neg.amax(-1))
    exps: list[Tensor] = []
    for neg in negs:
        exps.append((neg - top.unsqueeze(-1)).exp_())
    own = (pos - top).exp_()
    norm = own.clone()
    for e in exps:
        norm += e.sum(-1)
    total = ((norm.log() + top - pos) * weight).sum()
    scale = weight / norm
    dpos = own.mul_(scale).sub_(weight)
    for e in exps:
        grads.append(e.mul_(scale.unsqueeze(-1)))
    return total, dpos, grads


def score_gradients(kind: int, margin: float, X: Tensor, Y: Tensor, rhs_side: bool, lhs_side: bool,
                    weight: Tensor, chunk: int, batch_negatives: bool, shift: float = 0.0
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """The weighted loss of a batch scored by dot products, and its gradients.

    ``X``: (2, B, dim) the queries ``Q`` over the rhs rows ``R``; ``rhs_side``,
    ``lhs_side``: which sides are corrupted; ``Y``: (k, chunks, U, dim) one set of
    sampled candidates per chunk of ``chunk`` edges for each corrupted side (k of them,
    the rhs side's ``Nr`` first, then the lhs side's operated rows ``Ml``); ``weight``:
    (B,). With ``batch_negatives`` the chunk's other edges are negatives too. Per chunk,
    ``A = Q R^T`` holds the positives on its diagonal and both sides' in-batch negatives
    (the rhs side reads its rows, the lhs side its columns); ``S = [Q; R] [Nr; Ml]^T``
    scores both sides' sampled rows in one product; ``shift`` is added to those sampled scores
    (:func:`~bigembed.trainer.batch.softmax_shift`). Returns ``(loss, dX, dY)``, ``dY`` right
    after ``dX`` in one block of memory.
    """
    k = int(rhs_side) + int(lhs_side)
    B = X.shape[1]
    d = X.shape[2]
    U = Y.shape[2]
    full = B // chunk
    rem = B - full * chunk
    total = X.new_zeros(())
    # both gradients in one buffer, dX then dY, so that Adagrad reads them as one piece
    out = torch.empty(X.numel() + Y.numel(), device=X.device)
    dX = out[: X.numel()].view(X.shape)
    dY = out[X.numel() :].view(Y.shape)
    if U == 0:  # without sampled rows a group may be skipped
        dX.zero_()
    groups: list[tuple[int, int, int, int]] = [(0, chunk, full, 0)]
    if rem > 0:
        groups.append((full * chunk, rem, 1, full))
    for group in groups:
        start, c, n, first = group
        if n == 0:
            continue
        end = start + c * n
        x = X[:, start:end].reshape(2, n, c, d)
        q = x[0]
        r = x[1]
        # what each corrupted side's candidates are scored against: Q for the rhs side, R for the lhs side
        if k == 2:
            fixed = x.reshape(2 * n, c, d)
        elif rhs_side:
            fixed = q
        else:
            fixed = r
        y = Y[:, first : first + n].reshape(k * n, U, d)
        w = weight[start:end].view(n, c)
        in_batch = batch_negatives and c > 1
        blocks: list[Tensor] = []
        if in_batch:
            A = torch.bmm(q, r.transpose(1, 2))
            diagonal = A.diagonal(0, 1, 2)
            pos = diagonal.clone()
            diagonal.fill_(float("-inf"))  # an edge is not its own negative
            if k == 2:
                blocks.append(torch.cat([A, A.transpose(1, 2)]))
            elif rhs_side:
                blocks.append(A)
            else:
                blocks.append(A.transpose(1, 2))
        else:
            pos = (q * r).sum(-1)
        if U > 0:
            sampled = torch.bmm(fixed, y.transpose(1, 2))
            if shift != 0.0:  # a constant: the gradient with respect to the scores is unchanged
                sampled.add_(shift)
            blocks.append(sampled)
        if len(blocks) == 0:  # a one-edge remainder chunk without sampled negatives: nothing to score
            continue
        if k == 2:
            part, dpos_k, grads = loss_grads(kind, margin, pos.repeat(2, 1), blocks, w.repeat(2, 1),
                                             1 if in_batch else 0)
            dpos = dpos_k[:n] + dpos_k[n:]
        else:
            part, dpos, grads = loss_grads(kind, margin, pos, blocks, w, 1 if in_batch else 0)
        total += part
        whole = n * c == B  # one group: write the gradients straight into dX and dY
        dq = torch.empty(0, device=X.device)
        dr = torch.empty(0, device=X.device)
        have_q = False
        have_r = False
        if U > 0:
            dS = grads[len(grads) - 1]
            if whole:
                torch.bmm(dS.transpose(1, 2), fixed, out=dY.view(k * n, U, d))
            else:
                dY[:, first : first + n].copy_(torch.bmm(dS.transpose(1, 2), fixed).view(k, n, U, d))
            dfixed = torch.bmm(dS, y, out=dX.view(2 * n, c, d)) if whole and k == 2 else torch.bmm(dS, y)
            if k == 2:
                dq, dr = dfixed[:n], dfixed[n:]
                have_q = True
                have_r = True
            elif rhs_side:
                dq = dfixed
                have_q = True
            else:
                dr = dfixed
                have_r = True
        if in_batch:
            g = grads[0]
            if k == 2:
                dA = g[:n].add_(g[n:].transpose(1, 2))
            elif rhs_side:
                dA = g
            else:
                dA = g.transpose(1, 2)
            dA.diagonal(0, 1, 2).add_(dpos)
            dq = dq.baddbmm_(dA, r) if have_q else torch.bmm(dA, r)
            dr = dr.baddbmm_(dA.transpose(1, 2), q) if have_r else torch.bmm(dA.transpose(1, 2), q)
        else:
            p = dpos.unsqueeze(-1)
            dq = dq.addcmul_(p, r) if have_q else p * r
            dr = dr.addcmul_(p, q) if have_r else p * q
        if not (whole and k == 2 and U > 0):  # else dq and dr were computed in place, in dX
            dX[0, start:end].view(n, c, d).copy_(dq)
            dX[1, start:end].view(n, c, d).copy_(dr)
    return total, dX, dY


def wide_blocks(W: Tensor, chunk: int, U: int, B: int) -> tuple[Tensor, Tensor, Tensor]:
    """Views of the wide layout's three blocks (see :func:`wide_score_gradients`): ``Z``
    (chunks, c + U, dim), ``Q`` (chunks, c, dim) and ``Ml`` (chunks, U, dim)."""
    n = B // chunk
    d = W.shape[1]
    nz = n * (chunk + U)
    return W[:nz].view(n, chunk + U, d), W[nz : nz + B].view(n, chunk, d), W[nz + B :].view(n, U, d)


def wide_scores(W: Tensor, chunk: int, U: int, B: int) -> tuple[Tensor, Tensor]:
    """The two score products of :func:`wide_score_gradients`: ``S1 = Q Z^T`` (chunks, c, c + U)
    and ``Sl = R Ml^T`` (chunks, c, U), also for a gradient kernel that takes it from there."""
    Z, Q, M = wide_blocks(W, chunk, U, B)
    return torch.bmm(Q, Z.transpose(1, 2)), torch.bmm(Z[:, :chunk], M.transpose(1, 2))


def wide_score_gradients(kind: int, margin: float, W: Tensor, weight: Tensor, chunk: int,
                         U: int, shift: float = 0.0) -> tuple[Tensor, Tensor]:
    """:func:`score_gradients` for its most common case, both sides corrupted with in-batch and
    ``U`` sampled negatives and every chunk full, with the rhs side's candidates laid out
    beside the rhs rows so that they are scored in one product twice as wide.

    ``W``: (n (c + U) + B + n U, dim) rows in three blocks: ``Z``, per chunk its c rhs rows
    ``R`` then the rhs side's U sampled rows ``Nr``; the queries ``Q`` (B of them, chunk by
    chunk); the lhs side's sampled rows ``Ml``, U per chunk. Per chunk, ``[A | Sr] = Q Z^T``
    (c, c + U) holds the positives, the rhs side's in-batch negatives (rows of ``A``) and its
    sampled ones, and the lhs side reads its in-batch negatives from ``A``'s columns; then
    ``Sl = R Ml^T``. Backwards ``dQ = [dA | dSr] Z``, ``dZ = [dA | dSr]^T Q`` plus
    ``dSl Ml`` on its ``R`` rows, ``dMl = dSl^T R``: the nine products of a chunk as six
    calls of wider shapes, which the BLAS runs 12-15% faster (50 x 128 x 100 against
    50 x 128 x 50 on the benchmark's shape). ``shift`` is added to the sampled scores
    (:func:`~bigembed.trainer.batch.softmax_shift`). Returns ``(loss, dW)``, ``dW`` laid out as ``W``.
    """
    B = weight.shape[0]
    c = chunk
    n = B // c
    d = W.shape[1]
    nz = n * (c + U)
    Z, Q, M = wide_blocks(W, c, U, B)
    R = Z[:, :c]
    w = weight.view(n, c)
    S1, Sl = wide_scores(W, c, U, B)  # (n, c, c + U): [A | Sr]; (n, c, U)
    A = S1[:, :, :c]
    diagonal = A.diagonal(0, 1, 2)
    pos = diagonal.clone()
    diagonal.fill_(float("-inf"))  # an edge is not its own negative
    if shift != 0.0:
        S1[:, :, c:].add_(shift)
        Sl.add_(shift)
    total_r, dpos_r, grads_r = loss_grads(kind, margin, pos, [S1], w, 1)
    total_l, dpos_l, grads_l = loss_grads(kind, margin, pos, [A.transpose(1, 2), Sl], w, 1)
    dS1 = grads_r[0]
    dS1[:, :, :c].add_(grads_l[0].transpose(1, 2))
    dS1[:, :, :c].diagonal(0, 1, 2).add_(dpos_r + dpos_l)
    dSl = grads_l[1]
    out = torch.empty_like(W)
    dZ = out[:nz].view(n, c + U, d)
    torch.bmm(dS1, Z, out=out[nz : nz + B].view(n, c, d))
    torch.bmm(dS1.transpose(1, 2), Q, out=dZ)
    dZ[:, :c].baddbmm_(dSl, M)
    torch.bmm(dSl.transpose(1, 2), R, out=out[nz + B :].view(n, U, d))
    return total_r + total_l, out


def row_adagrad(table: Tensor, state: Tensor, slot: Tensor, indices: list[Tensor], grads: list[Tensor], lr: float,
                max_norm: float, overwrite: bool = False, eps: float = 1e-10) -> None:
    """Row-wise (``state``: (n,)) or per-coordinate (``state``: (n, dim)) Adagrad on the rows
    ``indices`` of ``table``, from ``grads``; both lists of pieces read as their concatenation.
    A half-precision ``table`` is updated in float32 and rounded to nearest.
    Repeated rows have their gradients summed first; only the rows named are touched.
    ``overwrite``: a single gradient piece may be used as scratch (the caller is done with it),
    which saves copying it.

    ``slot``: int32 scratch of at least ``n`` entries (any content; one per thread), which
    finds the repeated rows without sorting: every position writes its own number into its
    row's slot, and the positions that read their own number back are each row's
    representative (whichever write landed: any one of a row's positions serves, and the
    CPU kernel is serial, so the choice repeats run to run). Sorting the ids, as
    ``torch.unique`` does, cost a quarter of this function on the benchmark graph.

    The other occurrences of a row add their gradients into the representative's and are
    zeroed, and then every position is updated as it stands: the zeroed ones add nothing to
    the accumulator or the row. With few repeats (a batch of the benchmark graph names 4,000
    rows of 100,000, some 2% of them twice) this beats compacting the gradients to one per
    row, which copies them all.
    """
    flat = indices[0] if len(indices) == 1 else torch.cat(indices)
    m = flat.shape[0]
    if m == 0:
        return
    if len(grads) > 1:
        g = torch.cat(grads)
    elif overwrite and grads[0].is_contiguous():  # not an expanded view, whose rows share memory
        g = grads[0]
    else:
        g = grads[0].clone()
    positions = torch.arange(m, dtype=torch.int32, device=flat.device)
    slot.scatter_(0, flat, positions)
    owner = slot.index_select(0, flat)  # every position's representative
    repeat = owner != positions
    repeated = bool(repeat.any())
    if repeated:  # fold the other occurrences into their representative's gradient
        others = repeat.nonzero().squeeze(1)
        g.index_add_(0, owner.index_select(0, others), g.index_select(0, others))
        g.index_fill_(0, others, 0.0)
    # the step comes from what this call read plus its own squares, not from a re-read after the
    # add: another Hogwild worker's older write may have replaced the add, and a large gradient
    # divided by that worker's small sum is a huge step (see dense_adagrad_)
    # row-wise: the mean of squares through the norm (one pass, no (k, dim) temporary)
    square = g.square() if state.dim() == 2 else torch.linalg.vector_norm(g, dim=1).square_().div_(g.shape[1])
    own = state.index_select(0, flat).add_(square)
    state.index_add_(0, flat, square)
    step = own.sqrt_().add_(eps).reciprocal_().mul_(-lr)
    update = g.mul_(step if state.dim() == 2 else step.unsqueeze(1))
    if table.dtype == update.dtype:
        table.index_add_(0, flat, update)
    else:  # half-precision storage: add in float32, round to the stored precision once per row
        rows = flat
        if repeated:  # one write per row: with repeats, index_copy_ keeps an arbitrary one
            reps = repeat.logical_not_().nonzero().squeeze(1)
            rows = flat.index_select(0, reps)
            update = update.index_select(0, reps)
        table.index_copy_(0, rows, table.index_select(0, rows).float().add_(update).to(table.dtype))
    if max_norm > 0:
        clip_rows_(table, flat, max_norm)


def clip_rows_(table: Tensor, rows: Tensor, max_norm: float) -> None:
    """Rescale the rows ``rows`` of ``table`` that are longer than ``max_norm`` to that length."""
    norms = torch.linalg.vector_norm(table.index_select(0, rows).float(), dim=1)
    over = norms > max_norm
    if bool(over.any()):
        long_rows = rows[over]
        scaled = table.index_select(0, long_rows).float() * (max_norm / norms[over]).unsqueeze(1)
        table.index_copy_(0, long_rows, scaled.to(table.dtype))


def compiled(fn: F) -> F:
    """``fn`` compiled by TorchScript, or ``fn`` itself where that is not possible."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.script(fn)
    except Exception:  # noqa: BLE001 - any failure to compile leaves the Python function, same results
        return fn


fused_score_gradients = compiled(score_gradients)
fused_wide_score_gradients = compiled(wide_score_gradients)
fused_wide_scores = compiled(wide_scores)
fused_loss_grads = compiled(loss_grads)
fused_row_adagrad = compiled(row_adagrad)
fused_clip_rows_ = compiled(clip_rows_)
SCRIPTED = not isinstance(fused_row_adagrad, type(row_adagrad))
