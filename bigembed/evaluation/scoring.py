"""Scoring test edges in one direction, shared by the sampled and the full ranking protocols.

Predicting the rhs of (h, r, ?) scores ``comparator(op_r(h), c)`` for every
candidate c. Predicting the lhs of (?, r, t) scores ``comparator(op_r(c), t)``,
or, when the model learnt inverse relations (``model.reciprocal``),
``comparator(op_r'(t), c)`` with r' the inverse of r.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from bigembed.trainer import Model, RelationState


@dataclass(frozen=True)
class Direction:
    """Queries of one relation in one direction, ready to score against candidate rows."""

    queries: Tensor  # (n, dim)
    transform: Callable[[Tensor], Tensor]  # applied to candidate rows before comparing
    true_scores: Tensor  # (n,) score of each edge's true answer

    def scores(self, model: Model, candidates: Tensor) -> Tensor:
        """(n, m) scores of the queries against ``candidates`` (m, dim)."""
        return model.comparator.negative(self.queries, self.transform(candidates))


def direction(model: Model, relations: RelationState, relation: int, H: Tensor, T: Tensor,
              predict_lhs: bool, reciprocal: bool) -> Direction:
    """``H``/``T``: (n, dim) lhs and rhs rows of n edges of ``relation``."""
    comp = model.comparator
    if not predict_lhs:
        spec = model.specs[relation]
        query = spec.operator.apply(H, relations.param(relation))
        return Direction(query, _identity, comp.positive(query, T))
    if reciprocal:
        inverse = relation + len(model.specs) // 2
        query = model.specs[inverse].operator.apply(T, relations.param(inverse))
        return Direction(query, _identity, comp.positive(query, H))
    spec, params = model.specs[relation], relations.param(relation)

    def transform(c: Tensor) -> Tensor:
        return spec.operator.apply(c, params)

    return Direction(T, transform, comp.positive(transform(H), T))


def _identity(x: Tensor) -> Tensor:
    return x
