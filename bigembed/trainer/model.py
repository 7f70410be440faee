"""Scoring model pieces behind small interfaces: operators, comparators, losses.

A score is ``comparator(operator(lhs, relation), rhs)``. Each piece is chosen by
name through a registry whose error lists the known names. All are pure tensor
functions; the zoo grows by adding a class and a registry entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from bigembed.errors import ConfigError


class Operator(Protocol):
    """Transforms lhs embeddings with one relation's parameters."""

    def init_params(self, num_relations: int, dim: int) -> Tensor | None:
        """(num_relations, dim) float32 initial parameters, or None for no parameters."""

    def apply(self, x: Tensor, params: Tensor | None) -> Tensor:
        """``x``: (..., dim), ``params``: (dim,) or None -> (..., dim)."""


class NoneOperator:
    def init_params(self, num_relations: int, dim: int) -> Tensor | None:
        return None

    def apply(self, x: Tensor, params: Tensor | None) -> Tensor:
        return x


class TranslationOperator:
    def init_params(self, num_relations: int, dim: int) -> Tensor | None:
        return torch.zeros(num_relations, dim)

    def apply(self, x: Tensor, params: Tensor | None) -> Tensor:
        assert params is not None
        return x + params


class DiagonalOperator:
    def init_params(self, num_relations: int, dim: int) -> Tensor | None:
        return torch.ones(num_relations, dim)

    def apply(self, x: Tensor, params: Tensor | None) -> Tensor:
        assert params is not None
        return x * params


class Comparator(Protocol):
    def positive(self, lhs: Tensor, rhs: Tensor) -> Tensor:
        """``lhs``, ``rhs``: (..., n, dim) -> (..., n) scores of aligned pairs."""

    def negative(self, lhs: Tensor, candidates: Tensor) -> Tensor:
        """``lhs``: (..., n, dim), ``candidates``: (..., m, dim) -> (..., n, m) scores."""


class DotComparator:
    def positive(self, lhs: Tensor, rhs: Tensor) -> Tensor:
        return (lhs * rhs).sum(-1)

    def negative(self, lhs: Tensor, candidates: Tensor) -> Tensor:
        return torch.matmul(lhs, candidates.transpose(-1, -2))


class Loss(Protocol):
    def __call__(self, pos: Tensor, neg: Tensor, mask: Tensor | None) -> Tensor:
        """``pos``: (..., n), ``neg``: (..., n, m), ``mask``: (n, m) bool of pairs to ignore -> scalar sum."""


class RankingLoss:
    def __init__(self, margin: float) -> None:
        self.margin = margin

    def __call__(self, pos: Tensor, neg: Tensor, mask: Tensor | None) -> Tensor:
        hinge = torch.relu(self.margin - pos.unsqueeze(-1) + neg)
        if mask is not None:
            hinge = hinge.masked_fill(mask, 0.0)
        return hinge.sum()


OPERATORS: dict[str, Callable[[], Operator]] = {
    "none": NoneOperator,
    "translation": TranslationOperator,
    "diagonal": DiagonalOperator,
}
COMPARATORS: dict[str, Callable[[], Comparator]] = {"dot": DotComparator}


def make_operator(name: str) -> Operator:
    try:
        return OPERATORS[name]()
    except KeyError:
        raise ConfigError(f"model.operator: must be one of {', '.join(OPERATORS)}, got {name!r}") from None


def make_comparator(name: str) -> Comparator:
    try:
        return COMPARATORS[name]()
    except KeyError:
        raise ConfigError(f"model.comparator: must be one of {', '.join(COMPARATORS)}, got {name!r}") from None


def make_loss(name: str, margin: float) -> Loss:
    if name == "ranking":
        return RankingLoss(margin)
    raise ConfigError(f"model.loss: must be one of ranking, got {name!r}")
