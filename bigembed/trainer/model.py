"""Scoring model pieces behind small interfaces: operators, comparators, losses.

A score is ``comparator(operator(lhs, relation), rhs)``. Each piece is chosen by
name through a registry whose error lists the known names. All are pure tensor
functions; the zoo grows by adding a class and a registry entry.

Complex-valued operators (``complex_diagonal``, ``rotation``) read a row of
even dimension ``d`` as ``d/2`` complex numbers: real parts first, then
imaginary parts. With the ``dot`` comparator, ``complex_diagonal`` is ComplEx
(Trouillon et al. 2016): ``Re(sum_k h_k r_k conj(t_k))``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from bigembed.errors import ConfigError
from bigembed.trainer.kernels import LOSS_LOGISTIC, LOSS_RANKING, LOSS_SOFTMAX, fused_loss_grads

if TYPE_CHECKING:
    from bigembed.config import Config
    from bigembed.storage.data_manifest import DataManifest
    from bigembed.trainer.relations import RelationSpec

NEG_INF = float("-inf")


class Operator(Protocol):
    """Transforms lhs embeddings with one relation's parameters."""

    complex: bool  # rows are (real, imaginary) halves; the N3 regulariser uses moduli

    def param_shape(self, dim: int) -> tuple[int, ...] | None:
        """Shape of one relation's parameters, or None for no parameters."""

    def init_param(self, dim: int) -> Tensor | None:
        """One relation's initial parameters (the identity transform where there is one)."""

    def apply(self, x: Tensor, params: Tensor | None) -> Tensor:
        """``x``: (..., dim), ``params``: ``param_shape(dim)`` or None -> (..., dim)."""


class NoneOperator:
    complex = False

    def param_shape(self, dim: int) -> tuple[int, ...] | None:
        return None

    def init_param(self, dim: int) -> Tensor | None:
        return None

    def apply(self, x: Tensor, params: Tensor | None) -> Tensor:
        return x


class TranslationOperator:
    complex = False

    def param_shape(self, dim: int) -> tuple[int, ...] | None:
        return (dim,)

    def init_param(self, dim: int) -> Tensor | None:
        return torch.zeros(dim)

    def apply(self, x: Tensor, params: Tensor | None) -> Tensor:
        assert params is not None
        return x + params


class DiagonalOperator:
    complex = False

    def param_shape(self, dim: int) -> tuple[int, ...] | None:
        return (dim,)

    def init_param(self, dim: int) -> Tensor | None:
        return torch.ones(dim)

    def apply(self, x: Tensor, params: Tensor | None) -> Tensor:
        assert params is not None
        return x * params


class LinearOperator:
    """``x -> A x`` with a full (dim, dim) matrix per relation."""

    complex = False

    def param_shape(self, dim: int) -> tuple[int, ...] | None:
        return (dim, dim)

    def init_param(self, dim: int) -> Tensor | None:
        return torch.eye(dim)

    def apply(self, x: Tensor, params: Tensor | None) -> Tensor:
        assert params is not None
        return torch.matmul(x, params.t())


class AffineOperator:
    """``x -> A x + b``; the parameters are ``A`` stacked over ``b``: (dim + 1, dim)."""

    complex = False

    def param_shape(self, dim: int) -> tuple[int, ...] | None:
        return (dim + 1, dim)

    def init_param(self, dim: int) -> Tensor | None:
        return torch.cat([torch.eye(dim), torch.zeros(1, dim)])

    def apply(self, x: Tensor, params: Tensor | None) -> Tensor:
        assert params is not None
        return torch.matmul(x, params[:-1].t()) + params[-1]


def _complex_product(x: Tensor, re: Tensor, im: Tensor) -> Tensor:
    h = x.shape[-1] // 2
    a, b = x[..., :h], x[..., h:]
    return torch.cat([a * re - b * im, a * im + b * re], -1)


class ComplexDiagonalOperator:
    """Element-wise complex product ``x * r`` (ComplEx); parameters are (re, im) halves."""

    complex = True

    def param_shape(self, dim: int) -> tuple[int, ...] | None:
        return (dim,)

    def init_param(self, dim: int) -> Tensor | None:
        return torch.cat([torch.ones(dim // 2), torch.zeros(dim - dim // 2)])

    def apply(self, x: Tensor, params: Tensor | None) -> Tensor:
        assert params is not None
        h = x.shape[-1] // 2
        return _complex_product(x, params[..., :h], params[..., h:])


class RotationOperator:
    """Rotation in the complex plane, ``x * exp(i theta)`` (RotatE); parameters are ``dim/2`` angles."""

    complex = True

    def param_shape(self, dim: int) -> tuple[int, ...] | None:
        return (dim // 2,)

    def init_param(self, dim: int) -> Tensor | None:
        return torch.zeros(dim // 2)

    def apply(self, x: Tensor, params: Tensor | None) -> Tensor:
        assert params is not None
        return _complex_product(x, torch.cos(params), torch.sin(params))


class Comparator(Protocol):
    def positive(self, lhs: Tensor, rhs: Tensor) -> Tensor:
        """``lhs``, ``rhs``: (..., n, dim) -> (..., n) scores of aligned pairs."""

    def negative(self, lhs: Tensor, candidates: Tensor) -> Tensor:
        """``lhs``: (..., n, dim), ``candidates``: (..., m, dim) -> (..., n, m) scores.

        Every comparator is symmetric, so corrupting either side uses this.
        """


class DotComparator:
    def positive(self, lhs: Tensor, rhs: Tensor) -> Tensor:
        return (lhs * rhs).sum(-1)

    def negative(self, lhs: Tensor, candidates: Tensor) -> Tensor:
        return torch.matmul(lhs, candidates.transpose(-1, -2))


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class CosComparator:
    def positive(self, lhs: Tensor, rhs: Tensor) -> Tensor:
        return (_unit(lhs) * _unit(rhs)).sum(-1)

    def negative(self, lhs: Tensor, candidates: Tensor) -> Tensor:
        return torch.matmul(_unit(lhs), _unit(candidates).transpose(-1, -2))


def _squared_distances(lhs: Tensor, candidates: Tensor) -> Tensor:
    """``|a|^2 + |b|^2 - 2 a.b`` through one matrix multiply, clamped at 0 against rounding."""
    sq = torch.matmul(lhs, candidates.transpose(-1, -2)).mul_(-2.0)
    sq = sq + lhs.pow(2).sum(-1, keepdim=True) + candidates.pow(2).sum(-1).unsqueeze(-2)
    return sq.clamp_min(0.0)


class L2Comparator:
    """Negative Euclidean distance (the square root is kept away from 0 for a finite gradient)."""

    def positive(self, lhs: Tensor, rhs: Tensor) -> Tensor:
        return -(lhs - rhs).pow(2).sum(-1).clamp_min(1e-12).sqrt()

    def negative(self, lhs: Tensor, candidates: Tensor) -> Tensor:
        return -_squared_distances(lhs, candidates).clamp_min(1e-12).sqrt()


class SquaredL2Comparator:
    def positive(self, lhs: Tensor, rhs: Tensor) -> Tensor:
        return -(lhs - rhs).pow(2).sum(-1)

    def negative(self, lhs: Tensor, candidates: Tensor) -> Tensor:
        return -_squared_distances(lhs, candidates)


class Loss(Protocol):
    kind: int  # the loss's number in :mod:`bigembed.trainer.kernels` (LOSS_*)
    margin: float

    def __call__(self, pos: Tensor, neg: Tensor) -> Tensor:
        """``pos``: (..., n), ``neg``: (..., n, m) -> (..., n) loss of each positive.

        Negatives scored ``-inf`` are masked out (an edge's own positive, for instance).
        """

    def with_grads(self, pos: Tensor, negs: list[Tensor], weight: Tensor,
                   masked: int) -> tuple[Tensor, Tensor, list[Tensor]]:
        """The weighted loss and its gradients without autograd, for the fused training step.

        ``negs``: blocks (..., n, m_k) of one row of negatives each, read as their
        concatenation along the last axis (not modified); ``weight``: (..., n);
        ``masked``: how many of each row's negatives are ``-inf``. Returns the scalar
        ``sum(weight * loss)``, its gradient with respect to ``pos`` and to each block.
        """


class RankingLoss:
    """Margin ranking: ``sum_j max(0, margin - pos + neg_j)``."""

    kind = LOSS_RANKING

    def __init__(self, margin: float) -> None:
        self.margin = margin

    def __call__(self, pos: Tensor, neg: Tensor) -> Tensor:
        return torch.relu(self.margin - pos.unsqueeze(-1) + neg).sum(-1)

    def with_grads(self, pos: Tensor, negs: list[Tensor], weight: Tensor,
                   masked: int) -> tuple[Tensor, Tensor, list[Tensor]]:
        return fused_loss_grads(self.kind, self.margin, pos, negs, weight, masked)


class LogisticLoss:
    """Binary cross-entropy: the positive labelled 1, each negative 0 with weight 1/#negatives."""

    kind = LOSS_LOGISTIC
    margin = 0.0

    def __call__(self, pos: Tensor, neg: Tensor) -> Tensor:
        valid = (neg != NEG_INF).sum(-1).clamp_min(1)
        return torch.nn.functional.softplus(-pos) + torch.nn.functional.softplus(neg).sum(-1) / valid

    def with_grads(self, pos: Tensor, negs: list[Tensor], weight: Tensor,
                   masked: int) -> tuple[Tensor, Tensor, list[Tensor]]:
        return fused_loss_grads(self.kind, self.margin, pos, negs, weight, masked)


class SoftmaxLoss:
    """Cross-entropy of the positive against itself plus its negatives: ``logsumexp - pos``."""

    kind = LOSS_SOFTMAX
    margin = 0.0

    def __call__(self, pos: Tensor, neg: Tensor) -> Tensor:
        both = torch.cat([pos.unsqueeze(-1), neg], -1)
        return torch.logsumexp(both, -1) - pos

    def with_grads(self, pos: Tensor, negs: list[Tensor], weight: Tensor,
                   masked: int) -> tuple[Tensor, Tensor, list[Tensor]]:
        return fused_loss_grads(self.kind, self.margin, pos, negs, weight, masked)


OPERATORS: dict[str, Callable[[], Operator]] = {
    "none": NoneOperator,
    "translation": TranslationOperator,
    "diagonal": DiagonalOperator,
    "linear": LinearOperator,
    "affine": AffineOperator,
    "complex_diagonal": ComplexDiagonalOperator,
    "rotation": RotationOperator,
}
COMPARATORS: dict[str, Callable[[], Comparator]] = {
    "dot": DotComparator,
    "cos": CosComparator,
    "l2": L2Comparator,
    "squared_l2": SquaredL2Comparator,
}
LOSSES: dict[str, Callable[[float], Loss]] = {  # each made from the margin (only ranking uses it)
    "ranking": RankingLoss,
    "logistic": lambda margin: LogisticLoss(),
    "softmax": lambda margin: SoftmaxLoss(),
}


def make_operator(name: str, key: str = "model.operator") -> Operator:
    try:
        return OPERATORS[name]()
    except KeyError:
        raise ConfigError(f"{key}: must be one of {', '.join(OPERATORS)}, got {name!r}") from None


def make_comparator(name: str) -> Comparator:
    try:
        return COMPARATORS[name]()
    except KeyError:
        raise ConfigError(f"model.comparator: must be one of {', '.join(COMPARATORS)}, got {name!r}") from None


def make_loss(name: str, margin: float) -> Loss:
    try:
        return LOSSES[name](margin)
    except KeyError:
        raise ConfigError(f"model.loss: must be one of {', '.join(LOSSES)}, got {name!r}") from None


def param_size(shape: tuple[int, ...] | None) -> int:
    return 0 if shape is None else math.prod(shape)


@dataclass(frozen=True)
class Model:
    comparator: Comparator
    loss: Loss
    specs: list[RelationSpec]
    regularizer: str = "none"
    regularization: float = 0.0
    max_norm: float = 0.0
    softmax_correction: bool = False  # see softmax_shift

    @classmethod
    def from_config(cls, config: Config, relation_names: list[str],
                    relation_types: list[tuple[int, int]] | None = None,
                    type_names: list[str] | None = None) -> Model:
        from bigembed.trainer.relations import relation_specs  # which imports this module

        m = config.model
        return cls(make_comparator(m.comparator), make_loss(m.loss, m.margin),
                   relation_specs(config, relation_names, relation_types, type_names),
                   m.regularizer, m.regularization, m.max_norm, m.softmax_correction)

    @classmethod
    def for_data(cls, config: Config, data: DataManifest) -> Model:
        """The model of ``config`` over ``data``'s relations and their entity types."""
        return cls.from_config(config, data.relations, data.relation_types, data.type_names)


ELEMENTWISE_OPERATORS = ("translation", "diagonal", "complex_diagonal", "rotation")


def mixes_with_params(model: Model) -> bool:
    """Whether a batch may mix relations that have parameters: every relation has the same
    element-wise operator and corrupts only the rhs (as with ``model.reciprocal``), so each
    edge can carry its own relation's parameters. Mixed batches are larger and follow the
    shuffled edge order instead of one relation at a time."""
    from bigembed.trainer.relations import one_type_pair  # which imports this module

    first = model.specs[0] if model.specs else None
    return first is not None and first.operator_name in ELEMENTWISE_OPERATORS and one_type_pair(model.specs) and all(
        (s.operator_name, s.sides, s.all_negatives, s.weight)
        == (first.operator_name, "rhs", first.all_negatives, first.weight)
        for s in model.specs
    )
