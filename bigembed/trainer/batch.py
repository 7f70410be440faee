"""One training step: score a batch against its negatives, update the rows it touched.

A batch of B edges (all of one relation) is scored on each corrupted side
(``RelationSpec.sides``) in one of two ways:

* sampled: the batch is cut into chunks of C edges; a chunk's positives are
  corrupted with the chunk's own other edges (in-batch negatives, when
  ``training.batch_negatives``) and U rows sampled from the side's entity type,
  shared by the whole chunk (a fraction ``training.degree_fraction`` of them are
  endpoints of random training edges, i.e. degree-proportional). Scoring is a
  batched matrix multiply (chunks, C, dim) x (chunks, dim, C + U).
* all negatives: every positive against every row of the side's entity type,
  (B, dim) x (dim, n); the gradient then reaches every one of those rows.

Where the rows come from (``training.negative_partitions``): from the corrupted
side's own partition only, as PyTorch-BigGraph does (then a query (h, r, ?) whose
answer lies in partition j is never contrasted with the nodes of the other
partitions), or, when the buffer holds every partition, from all of them that hold
the side's entity type, uniformly over their union (``extras``).

Losses are per positive, multiplied by the edge's weight and the relation's weight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from bigembed.config import TrainingConfig
from bigembed.trainer import native
from bigembed.trainer.model import NEG_INF, Model, SoftmaxLoss
from bigembed.trainer.negatives import degree_count, in_chunk_mask, sample_negatives, share_uniform
from bigembed.trainer.relations import RelationSpec, RelationState
from bigembed.trainer.state import PartitionState

# One slice of all-negatives scores: 8M floats (32 MB) stays below glibc's largest
# mmap threshold, so the allocator reuses the memory instead of faulting it in anew.
SCORE_ELEMENTS = 8 << 20


@dataclass
class Source:
    """Candidate rows of one resident partition: all rows of the corrupted side's entity type
    (``table``) or rows sampled per chunk (``idx``, ``rows``)."""

    state: PartitionState
    start: int  # first row of the entity type in ``state``
    table: Tensor | None = None  # (n, dim) leaf: the rows [start, start + n)
    idx: Tensor | None = None  # (chunks, U_s) sampled rows
    rows: Tensor | None = None  # (chunks, U_s, dim) leaf of the sampled rows


@dataclass
class Negatives:
    """How one side is corrupted: candidate rows from one or more partitions, the answer's
    partition first."""

    sources: list[Source]
    population: int = 0  # rows the sampled candidates are drawn from (every source's, summed)

    @property
    def own(self) -> Source:
        return self.sources[0]

    @property
    def table(self) -> Tensor | None:
        return self.own.table

    @property
    def idx(self) -> Tensor | None:
        return self.own.idx

    @property
    def start(self) -> int:
        return self.own.start

    def all_table(self) -> Tensor:
        """Every candidate row, the answer's partition's first."""
        tables = [s.table for s in self.sources if s.table is not None]
        return tables[0] if len(tables) == 1 else torch.cat(tables)

    def all_rows(self) -> Tensor:
        """(chunks, U, dim) every sampled row, the answer's partition's first."""
        rows = [s.rows for s in self.sources if s.rows is not None]
        return rows[0] if len(rows) == 1 else torch.cat(rows, 1)

    def leaves(self) -> list[Tensor]:
        return [t for s in self.sources for t in (s.table, s.rows) if t is not None]


def sample_sources(spec: RelationSpec, lhs: PartitionState, rhs: PartitionState,
                   extras: Sequence[PartitionState] | None, corrupt_lhs: bool,
                   pools: tuple[Tensor, Tensor] | None, config: TrainingConfig, n_chunks: int,
                   generator: torch.Generator, gather_rows: bool = True) -> Negatives:
    """The candidate rows of one corrupted side: every row of the side's entity type in each
    source partition (all negatives, as leaves ``table``), or ``config.negatives`` rows per chunk
    sampled over the sources' union (``rows`` leaves with their ``idx``; with ``gather_rows``
    False only the ``idx``, for a caller that gathers the rows where it wants them)."""
    state = lhs if corrupt_lhs else rhs
    entity_type = spec.lhs_type if corrupt_lhs else spec.rhs_type
    sources = [Source(state, state.range_of(entity_type)[0])]
    if extras is not None:
        for other in (rhs if corrupt_lhs else lhs, *extras):
            o_start, o_stop = other.range_of(entity_type)
            if o_stop > o_start and all(other is not s.state for s in sources):
                sources.append(Source(other, o_start))
    sizes = [s.state.range_of(entity_type)[1] - s.start for s in sources]
    if spec.all_negatives:
        for src, n in zip(sources, sizes, strict=True):
            src.table = src.state.emb[src.start : src.start + n].detach().float().requires_grad_()
        return Negatives(sources, sum(sizes))
    pool = None if pools is None else pools[0 if corrupt_lhs else 1]
    k = degree_count(config.negatives, config.degree_fraction, pool)
    counts = share_uniform(config.negatives - k, sizes)
    counts[0] += k
    for src, n, count in zip(sources, sizes, counts, strict=True):
        first = src is sources[0]
        src.idx = sample_negatives(n, n_chunks, count, config.degree_fraction, pool if first else None,
                                   generator, low=src.start, k=k if first else 0)
        if gather_rows:
            src.rows = gather(src.state.emb, src.idx).requires_grad_()
    return Negatives(sources, sum(sizes))


def softmax_shift(model: Model, config: TrainingConfig, sides: Sequence[Negatives]) -> float:
    """What is added to every uniformly sampled negative's score under the softmax loss
    (``model.softmax_correction``): ``log(N / U)`` for U negatives an edge drawn from N
    candidate rows (the mean over the corrupted sides), so that the U scores stand in for
    all N rows. Without it a sampled softmax is a softmax over a tiny vocabulary: the
    positive soon beats U random rows and learning stalls long before it beats the hard
    ones. In-batch negatives are not shifted: they are drawn by degree, not uniformly, and
    weighting them as uniform ones over-weights the popular nodes (CoDEx-M: valid MRR 0.22
    instead of 0.31 after 6 epochs). 0 for other losses and for all-negatives scoring."""
    if (not model.softmax_correction or not isinstance(model.loss, SoftmaxLoss) or not sides
            or config.negatives <= 0 or any(n.table is not None for n in sides)):
        return 0.0
    population = sum(n.population for n in sides) / len(sides)
    return math.log(population / config.negatives) if population > 0 else 0.0


def gather(table: Tensor, idx: Tensor) -> Tensor:
    """``table[idx]`` in float32 for an index of any shape, through ``index_select`` (several
    times faster than advanced indexing for row gathers on the CPU)."""
    return table.index_select(0, idx.reshape(-1)).float().view(*idx.shape, table.shape[-1])


def gather_into(out: Tensor, table: Tensor, idx: Tensor, lib: native.Lib = native.RESOLVE) -> None:
    """``out[:] = table[idx]`` for a 1-d ``idx``; widens a half-precision ``table``. Float32 rows
    go through the C gather where it is built (:mod:`bigembed.trainer.native`), which prefetches."""
    lib = native.resolved(lib) if table.is_cpu else None
    if (lib is not None and table.dtype == out.dtype == torch.float32 and idx.dtype == torch.int64
            and table.is_contiguous() and out.is_contiguous() and idx.is_contiguous()):
        native.gather(lib, out, table, idx)
    elif table.dtype == out.dtype:
        torch.index_select(table, 0, idx, out=out)
    else:
        out.copy_(table.index_select(0, idx))


def _regularizer(model: Model, spec: RelationSpec, xs: list[Tensor], params: Tensor | None, weight: Tensor,
                 mixed: bool = False) -> Tensor:
    """The penalty of a batch's rows ``xs`` ((B, dim) each) and relation parameters, each
    edge's share multiplied by its ``weight`` ((B,): edge weight times relation weight), so
    that an edge of weight 0 teaches nothing, not even shrinkage."""
    def per_row(x: Tensor, complex_rows: bool) -> Tensor:  # (n, ...) -> (n,)
        if model.regularizer == "n3":
            if complex_rows:
                h = x.shape[-1] // 2
                x = (x[..., :h].pow(2) + x[..., h:].pow(2)).pow(1.5)
            else:
                x = x.abs().pow(3)
        else:
            x = x.pow(2)
        return x.reshape(x.shape[0], -1).sum(1)

    complex_rows = spec.operator.complex
    total = xs[0].new_zeros(())
    for x in xs:
        total = total + (per_row(x, complex_rows) * weight).sum()
    # Each edge uses its relation's parameters once (rotation angles are not penalised);
    # ``params`` is one relation's, or (n, ...) one row per edge for a mixed batch.
    if params is not None and spec.operator_name != "rotation":
        if mixed:
            total = total + (per_row(params, complex_rows) * weight).sum()
        else:
            total = total + per_row(params.unsqueeze(0), complex_rows)[0] * weight.sum()
    return model.regularization * total


def _side_loss(model: Model, spec: RelationSpec, pos_query: Tensor, fixed: Tensor, idx: Tensor,
               negs: Negatives, corrupt_lhs: bool, params: Tensor | None, chunk: int,
               batch_negatives: bool, own: Tensor, shift: float = 0.0, offset: Tensor | None = None) -> Tensor:
    """Per-positive loss of corrupting one side (``shift``: added to the sampled negatives'
    scores, see :func:`softmax_shift`; ``offset``: the side's global vector, added to every
    candidate row, ``model.global_emb``).

    ``pos_query``: (B, dim) the (operated) lhs; ``fixed``: (B, dim) the side that
    stays; ``own``: (B, dim) leaf rows of the corrupted side (its in-batch
    candidates); ``idx``: (B,) their row indices; returns (B,) losses.
    """
    op, comp = spec.operator, model.comparator
    pos = comp.positive(pos_query, fixed if corrupt_lhs else own)

    def candidates(x: Tensor) -> Tensor:
        return op.apply(x, params) if corrupt_lhs else x

    if negs.table is not None:  # all negatives, in row slices of at most SCORE_ELEMENTS scores
        cands = candidates(_plus(negs.all_table(), offset))
        idx = idx - negs.start if negs.start else idx
        query = fixed if corrupt_lhs else pos_query
        step = max(1, SCORE_ELEMENTS // max(1, cands.shape[0]))
        losses = []
        for s in range(0, query.shape[0], step):
            neg = comp.negative(query[s : s + step], cands)
            if isinstance(model.loss, SoftmaxLoss):
                # The true answer is one of the n columns, so the loss is plain cross-entropy
                # over them (one fused kernel instead of masking it out and adding it back).
                losses.append(torch.nn.functional.cross_entropy(neg, idx[s : s + step], reduction="none"))
                continue
            rows = torch.arange(neg.shape[0], device=neg.device)
            neg = neg.index_put((rows, idx[s : s + step]), torch.tensor(NEG_INF, device=neg.device))
            losses.append(model.loss(pos[s : s + step], neg))
        return torch.cat(losses)
    B, d = pos_query.shape
    full, rem = divmod(B, chunk)
    out: list[Tensor] = []
    all_rows = _plus(negs.all_rows(), offset)
    for start, count, n_chunks, first in ((0, chunk, full, 0), (full * chunk, rem, 1 if rem else 0, full)):
        if not n_chunks:
            continue
        end = start + count * n_chunks
        q = (fixed if corrupt_lhs else pos_query)[start:end].view(n_chunks, count, d)
        parts = [all_rows[first : first + n_chunks]]
        if batch_negatives:
            parts.insert(0, own[start:end].view(n_chunks, count, d))
        neg = comp.negative(q, candidates(torch.cat(parts, 1)))
        if shift:  # the sampled columns only (after the in-batch ones)
            U = all_rows.shape[1]
            neg = torch.cat([neg[..., :-U], neg[..., -U:] + shift], -1)
        if batch_negatives:
            neg = neg.masked_fill(in_chunk_mask(count, neg.shape[-1], neg.device), NEG_INF)
        out.append(model.loss(pos[start:end].view(n_chunks, count), neg).reshape(-1))
    return torch.cat(out)


def _plus(rows: Tensor, offset: Tensor | None) -> Tensor:
    return rows if offset is None else rows + offset


@dataclass
class BatchLoss:
    """A batch's loss and the leaves it was computed from."""

    loss: Tensor
    L: Tensor  # (B, dim) lhs rows
    R: Tensor  # (B, dim) rhs rows ((chunks, c, dim) when ``pieces`` is set)
    params: Tensor | None  # the relation's parameters (all relations' for a mixed batch)
    sides: list[tuple[bool, Negatives]]  # (corrupts the lhs?, its negatives) per corrupted side
    # the fused step's sparse gradients as (partition, row ids, gradient rows), in memory order;
    # None: take them from the leaves above
    pieces: list[tuple[PartitionState, Tensor, Tensor]] | None = None
    globals: Tensor | None = None  # the (types, dim) global vectors' leaf (``model.global_emb``)


def batch_loss(model: Model, lhs: PartitionState, rhs: PartitionState, relations: RelationState,
               relation: int, lhs_idx: Tensor, rhs_idx: Tensor, weights: Tensor | None,
               config: TrainingConfig, generator: torch.Generator,
               pools: tuple[Tensor, Tensor] | None = None, rels: Tensor | None = None,
               extras: Sequence[PartitionState] | None = None) -> BatchLoss:
    """The summed, weighted, regularised loss of a batch of edges of ``relation``.

    ``extras``: None to draw a side's negatives from its own partition only, else the
    resident partitions besides the bucket's two, which are all sources of negatives
    (the caller decides, from ``training.negative_partitions``).
    With ``rels`` ((B,) relation of each edge) the batch mixes relations: allowed
    when :func:`mixes_with_params` holds, the parameters of all relations form
    one (num_relations, ...) leaf and each edge uses its own row.
    """
    spec = model.specs[relation]
    params = relations.param(relation) if rels is None else relations.stacked()
    if params is not None:
        params = params.clone().requires_grad_()
    edge_params = params if rels is None or params is None else params[rels]
    B = lhs_idx.shape[0]
    chunk = min(config.chunk_size, B)
    n_chunks = -(-B // chunk)
    L = gather(lhs.emb, lhs_idx).requires_grad_()
    R = gather(rhs.emb, rhs_idx).requires_grad_()
    G = relations.global_leaf()  # the rows the model scores are the stored ones plus their type's vector
    offsets = (None, None) if G is None else (G[spec.lhs_type], G[spec.rhs_type])
    Lg, Rg = _plus(L, offsets[0]), _plus(R, offsets[1])
    query = spec.operator.apply(Lg, edge_params)
    w = torch.full((B,), spec.weight, device=L.device) if weights is None else weights * spec.weight
    loss = L.new_zeros(())
    sides = [(corrupt_lhs, sample_sources(spec, lhs, rhs, extras, corrupt_lhs, pools, config, n_chunks, generator))
             for corrupt_lhs in (False, True) if spec.sides != ("rhs" if corrupt_lhs else "lhs")]
    shift = softmax_shift(model, config, [negs for _, negs in sides])
    for corrupt_lhs, negs in sides:
        idx, own = (lhs_idx, Lg) if corrupt_lhs else (rhs_idx, Rg)
        if spec.all_negatives or config.negatives or (config.batch_negatives and chunk > 1):
            per_edge = _side_loss(model, spec, query, Rg if corrupt_lhs else Lg, idx, negs, corrupt_lhs, params,
                                  chunk, config.batch_negatives, own, shift, offsets[0 if corrupt_lhs else 1])
            loss = loss + (per_edge * w).sum()
    if model.regularizer != "none" and model.regularization > 0:
        loss = loss + _regularizer(model, spec, [L, R], edge_params, w, mixed=rels is not None)
    return BatchLoss(loss, L, R, params, sides, globals=G)
